package kbs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

const testInitData = `version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs]
[token_configs.kbs]
url = "http://kbs:8080"
'''
"cdh.toml" = '''
[kbc]
name = "cc_kbc"
url = "http://kbs:8080"
'''
`

func tokenClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func annotated(claims map[string]any) map[string]any {
	cpu0, _ := claims["submods"].(map[string]any)["cpu0"].(map[string]any)
	ev, _ := cpu0["ear.veraison.annotated-evidence"].(map[string]any)
	return ev
}

func TestHappyPathEC(t *testing.T) {
	s, hs, _ := newTestKBS(t)
	s.SetResource("default/key/1", []byte("the secret"))
	ref, err := ExpectInitData([]byte(testInitData))
	if err != nil {
		t.Fatal(err)
	}
	s.SetInitDataReference(ref)

	c := newClient(t, hs.URL)
	r := c.authRaw(`{"version":"0.4.0","tee":"sample","extra-params":""}`)
	if r.status != http.StatusOK {
		t.Fatalf("auth %d %s", r.status, r.body)
	}
	sc := r.header.Get("Set-Cookie")
	if !regexp.MustCompile(`^kbs-session-id=[0-9a-f]{32}; Expires=`).MatchString(sc) {
		t.Errorf("Set-Cookie %q", sc)
	}
	if n, err := base64.StdEncoding.DecodeString(c.nonce); err != nil || len(n) != 32 {
		t.Errorf("nonce %q is not base64 of 32 bytes", c.nonce)
	}
	if !strings.Contains(string(r.body), `"extra-params":""`) {
		t.Errorf("challenge %s", r.body)
	}

	idata := testInitData
	token := c.mustAttest(attestOpts{initData: &idata})
	claims := tokenClaims(t, token)
	ev := annotated(claims)
	pk, _ := ev["runtime_data_claims"].(map[string]any)["tee-pubkey"].(map[string]any)
	if pk["kty"] != "EC" || pk["crv"] != "P-256" || pk["alg"] != "ECDH-ES+A256KW" {
		t.Errorf("tee-pubkey claim %v", pk)
	}
	idc, _ := ev["init_data_claims"].(map[string]any)
	cdh, _ := idc["cdh.toml"].(map[string]any)
	if kbc, _ := cdh["kbc"].(map[string]any); kbc["name"] != "cc_kbc" {
		t.Errorf("init_data_claims %v", idc)
	}
	if _, ok := claims["exp"].(float64); !ok {
		t.Errorf("no exp in %v", claims)
	}
	if _, ok := ev["sample"].(map[string]any); !ok {
		t.Errorf("no sample claims in %v", ev)
	}

	if again := c.mustAttest(attestOpts{initData: &idata}); again != token {
		t.Error("a second /attest on an attested session returned a different token")
	}

	r = c.resource("default/key/1", "")
	if r.status != http.StatusOK {
		t.Fatalf("resource by cookie: %d %s", r.status, r.body)
	}
	if got := c.decrypt(r.body); string(got) != "the secret" {
		t.Errorf("decrypted %q", got)
	}
	var flat map[string]string
	_ = json.Unmarshal(r.body, &flat)
	hdr, _ := base64.RawURLEncoding.DecodeString(flat["protected"])
	if !strings.Contains(string(hdr), `"alg":"ECDH-ES+A256KW"`) || !strings.Contains(string(hdr), `"enc":"A256GCM"`) || !strings.Contains(string(hdr), `"epk"`) {
		t.Errorf("protected header %s", hdr)
	}

	bearer := newClient(t, hs.URL)
	bearer.ec = c.ec // the token names c's key; only c can decrypt
	r = bearer.resource("default/key/1", token)
	if r.status != http.StatusOK || string(bearer.decrypt(r.body)) != "the secret" {
		t.Fatalf("resource by bearer: %d %s", r.status, r.body)
	}

	req := s.Requests()
	if req["auth"] != 1 || req["attest"] != 2 || req["resource"] != 2 {
		t.Errorf("request counts %v", req)
	}
	if len(s.Refusals()) != 0 {
		t.Errorf("refusals %v", s.Refusals())
	}
	if got := s.Served(); len(got) != 2 || got[0] != "default/key/1" {
		t.Errorf("served %v", got)
	}
}

func TestHappyPathRSA(t *testing.T) {
	s, hs, _ := newTestKBS(t)
	s.SetResource("default/key/rsa", []byte("rsa secret"))
	c := newClient(t, hs.URL)
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	c.rsa = k
	c.auth("sample")
	c.mustAttest(attestOpts{})
	r := c.resource("default/key/rsa", "")
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if got := c.decrypt(r.body); string(got) != "rsa secret" {
		t.Errorf("decrypted %q", got)
	}
}

func TestAttestRefusals(t *testing.T) {
	other := newClient(t, "")
	tampered := strings.Replace(testInitData, "8080", "8081", 1)
	good := testInitData
	cases := []struct {
		name   string
		ref    InitDataReference
		tee    string
		opts   func(c *rcarClient) attestOpts
		detail string
	}{
		{"wrong nonce", AnyInitData(), "sample", func(c *rcarClient) attestOpts {
			return attestOpts{nonce: base64.StdEncoding.EncodeToString(make([]byte, 32))}
		}, "nonce in the handshake session is different"},
		{"key binding of another key", AnyInitData(), "sample", func(c *rcarClient) attestOpts {
			return attestOpts{reportData: reportData(c.nonce, other.jwkJSON())}
		}, "REPORT_DATA is different"},
		{"init-data one byte changed", ExpectInitDataDigestOf(t, testInitData), "sample", func(c *rcarClient) attestOpts {
			return attestOpts{initData: &tampered}
		}, "init-data digest mismatch"},
		{"init-data missing", ExpectInitDataDigestOf(t, testInitData), "sample", func(c *rcarClient) attestOpts {
			return attestOpts{}
		}, "init-data missing"},
		{"init-data unexpected", ExpectNoInitData(), "sample", func(c *rcarClient) attestOpts {
			return attestOpts{initData: &good}
		}, "expects none"},
		{"unsupported tee", AnyInitData(), "snp", func(c *rcarClient) attestOpts {
			return attestOpts{}
		}, `tee "snp" is not supported by this test KBS`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, hs, _ := newTestKBS(t)
			s.SetInitDataReference(tc.ref)
			c := newClient(t, hs.URL)
			c.auth(tc.tee)
			expectRefusal(t, tc.name, c.attest(tc.opts(c)), 401, ErrAttestation, tc.detail)
			if !s.RefusedWith(ErrAttestation, tc.detail) {
				t.Errorf("refusal not recorded: %v", s.Refusals())
			}
			// The session stays unattested: no resource for it.
			s.SetResource("default/key/1", []byte("x"))
			expectRefusal(t, "resource after failed attest", c.resource("default/key/1", ""), 401, ErrTokenNotFound, "session not attested")
		})
	}
}

// ExpectInitDataDigestOf is ExpectInitData that fails the test on error.
func ExpectInitDataDigestOf(t *testing.T, text string) InitDataReference {
	ref, err := ExpectInitData([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestSessions(t *testing.T) {
	s, hs, clock := newTestKBS(t)
	s.SetResource("default/key/1", []byte("x"))

	c := newClient(t, hs.URL)
	r := c.do("POST", "/kbs/v0/attest", c.attestBody(attestOpts{nonce: "AAAA"}), nil)
	expectRefusal(t, "no cookie", r, 401, ErrAttestation, "cookie not found")

	c.cookie, c.nonce = strings.Repeat("ab", 16), "AAAA"
	expectRefusal(t, "unknown session", c.attest(attestOpts{}), 401, ErrAttestation, "session not found")

	c.auth("sample")
	clock.Advance(5*time.Minute + time.Second)
	expectRefusal(t, "expired session", c.attest(attestOpts{}), 401, ErrAttestation, "session expired")
	// Expired sessions are forgotten, so the same cookie is now unknown.
	expectRefusal(t, "replayed expired session", c.attest(attestOpts{}), 401, ErrAttestation, "session not found")

	// An attested session's cookie stops working when the session expires.
	c.auth("sample")
	c.mustAttest(attestOpts{})
	if r := c.resource("default/key/1", ""); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	clock.Advance(5*time.Minute + time.Second)
	expectRefusal(t, "expired attested session", c.resource("default/key/1", ""), 401, ErrTokenNotFound, "session expired")
}

func TestResourceRefusals(t *testing.T) {
	s, hs, clock := newTestKBS(t)
	s.SetResource("default/key/1", []byte("x"))
	s.SetResource("default/key/secret", []byte("y"))
	s.SetResourcePolicy(func(path string, claims map[string]any) error {
		if path == "default/key/secret" {
			return errors.New("secret is off limits")
		}
		if annotated(claims)["sample"] == nil {
			return errors.New("not a sample TEE")
		}
		return nil
	})
	c := newClient(t, hs.URL)
	c.auth("sample")
	token := c.mustAttest(attestOpts{})

	expectRefusal(t, "unknown resource", c.resource("default/key/nope", ""), 401, ErrPluginInternal, "resource not found")
	expectRefusal(t, "short path", c.resource("default/key", ""), 401, ErrPluginInternal, "illegal ResourceDesc")
	expectRefusal(t, "denied", c.resource("default/key/secret", ""), 401, ErrPolicyDeny, "off limits")
	if !s.RefusedWith(ErrPolicyDeny, "off limits") {
		t.Errorf("refusals %v", s.Refusals())
	}

	anon := newClient(t, hs.URL)
	expectRefusal(t, "no token", anon.resource("default/key/1", ""), 401, ErrTokenNotFound, "no Authorization header")

	// A token of the right shape signed by someone else.
	forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged, err := signES256(forger, map[string]any{"alg": "ES256", "typ": "JWT"}, tokenClaims(t, token))
	if err != nil {
		t.Fatal(err)
	}
	expectRefusal(t, "forged token", anon.resource("default/key/1", forged), 401, ErrTokenVerifier, "signature")
	expectRefusal(t, "garbage token", anon.resource("default/key/1", "a.b"), 401, ErrTokenVerifier, "compact JWS")

	clock.Advance(5*time.Minute + time.Second)
	expectRefusal(t, "expired token", anon.resource("default/key/1", token), 401, ErrTokenVerifier, "token expired")

	r := c.do("POST", "/kbs/v0/resource/default/key/1", []byte("x"), nil)
	expectRefusal(t, "upload", r, 401, ErrAdminAuthAccess, "no admin API")
}

func TestAuthRefusalsAndRouting(t *testing.T) {
	s, hs, _ := newTestKBS(t)
	c := newClient(t, hs.URL)
	// Trustee answers a bad /auth with 401 AttestationError (its error.rs
	// maps everything but unknown plugins and paths to 401).
	expectRefusal(t, "old version", c.authRaw(`{"version":"0.1.1","tee":"sample","extra-params":""}`), 401, ErrAttestation, "Version Mismatch: expect =0.4.0 while the request is 0.1.1")
	expectRefusal(t, "not semver", c.authRaw(`{"version":"zero","tee":"sample","extra-params":""}`), 401, ErrAttestation, "failed to parse KBS version")
	expectRefusal(t, "unknown tee", c.authRaw(`{"version":"0.4.0","tee":"quantum","extra-params":""}`), 401, ErrAttestation, "unknown variant `quantum`")
	expectRefusal(t, "no extra-params", c.authRaw(`{"version":"0.4.0","tee":"sample"}`), 401, ErrAttestation, "missing field `extra-params`")
	expectRefusal(t, "not JSON", c.authRaw(`version=0.4.0`), 401, ErrAttestation, "deserialize Request")

	expectRefusal(t, "GET auth", c.do("GET", "/kbs/v0/auth", nil, nil), 404, ErrPluginNotFound, "Plugin auth not found")
	expectRefusal(t, "unknown plugin", c.do("GET", "/kbs/v0/nebula/x", nil, nil), 404, ErrPluginNotFound, "Plugin nebula not found")
	if n := s.Requests()["auth"]; n != 6 {
		t.Errorf("auth requests %d, want 6", n)
	}
	if !s.RefusedWith(ErrAttestation, "Version Mismatch") {
		t.Errorf("refusals %v", s.Refusals())
	}
}

func TestTLS(t *testing.T) {
	s := New(Options{TLS: true})
	s.SetResource("default/key/1", []byte("over tls"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { _ = s.Close() })
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CertPEM()) {
		t.Fatalf("CertPEM %q", s.CertPEM())
	}
	c := newClient(t, "https://"+l.Addr().String())
	c.http = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	c.auth("sample")
	c.mustAttest(attestOpts{})
	r := c.resource("default/key/1", "")
	if r.status != 200 || string(c.decrypt(r.body)) != "over tls" {
		t.Fatalf("%d %s", r.status, r.body)
	}
}
