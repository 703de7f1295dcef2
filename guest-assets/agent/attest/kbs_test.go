package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// fakeKBS plays Trustee's KBS for the sample TEE: it checks what the
// protocol requires of the guest (version, cookie, nonce, the report data
// recomputed from its own canonical runtime-data text) and wraps resources
// to the guest's key with go-jose.
type fakeKBS struct {
	t         *testing.T
	srv       *httptest.Server
	resources map[string][]byte
	exp       time.Time // token exp

	mu          sync.Mutex
	nonce, sess string
	pub         *ecdsa.PublicKey
	token       string
	initData    *initDataBody
	auths       atomic.Int32
	gets        atomic.Int32
	// hook, when set, may answer a request itself (returns true).
	hook func(w http.ResponseWriter, r *http.Request) bool
}

func newFakeKBS(t *testing.T, tls bool) *fakeKBS {
	k := &fakeKBS{t: t, resources: map[string][]byte{}, exp: time.Now().Add(time.Hour)}
	h := http.HandlerFunc(k.serve)
	if tls {
		k.srv = httptest.NewTLSServer(h)
	} else {
		k.srv = httptest.NewServer(h)
	}
	t.Cleanup(k.srv.Close)
	return k
}

func kbsErr(w http.ResponseWriter, status int, typ, detail string) {
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"https://github.com/confidential-containers/kbs/errors/%s","detail":%q}`, typ, detail)
}

func (k *fakeKBS) serve(w http.ResponseWriter, r *http.Request) {
	if k.hook != nil && k.hook(w, r) {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case r.Method == "POST" && r.URL.Path == "/kbs/v0/auth":
		k.auths.Add(1)
		var req struct {
			Version     string         `json:"version"`
			Tee         string         `json:"tee"`
			ExtraParams map[string]any `json:"extra-params"`
		}
		if json.NewDecoder(r.Body).Decode(&req) != nil || req.Version != "0.4.0" || req.Tee != "sample" || req.ExtraParams["supported-hash-algorithms"] == nil {
			kbsErr(w, 400, "InvalidRequest", "bad auth request")
			return
		}
		k.nonce = base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("nonce-%d-padding-to-32-bytes!!", k.auths.Load())))
		k.sess = fmt.Sprintf("%032x", k.auths.Load())
		http.SetCookie(w, &http.Cookie{Name: "kbs-session-id", Value: k.sess, Expires: time.Now().Add(5 * time.Minute)})
		fmt.Fprintf(w, `{"nonce":%q,"extra-params":""}`, k.nonce)
	case r.Method == "POST" && r.URL.Path == "/kbs/v0/attest":
		if c, err := r.Cookie("kbs-session-id"); err != nil || c.Value != k.sess {
			kbsErr(w, 401, "UnAuthenticatedCookie", "no session")
			return
		}
		var req struct {
			InitData    *initDataBody `json:"init-data"`
			RuntimeData runtimeData   `json:"runtime-data"`
			TeeEvidence struct {
				Primary    struct{ SVN, Report_Data string } `json:"primary_evidence"`
				Additional *string                           `json:"additional_evidence"`
			} `json:"tee-evidence"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.TeeEvidence.Additional == nil || *req.TeeEvidence.Additional != "" {
			kbsErr(w, 400, "InvalidRequest", fmt.Sprint(err))
			return
		}
		k.initData = req.InitData
		p := req.RuntimeData.TeePubKey
		if req.RuntimeData.Nonce != k.nonce {
			kbsErr(w, 401, "AttestationError", "nonce mismatch")
			return
		}
		// The verifier's side, written independently of package jcs: keys in
		// sorted order, compact.
		canon := fmt.Sprintf(`{"additional-evidence":"","nonce":%q,"tee-pubkey":{"alg":%q,"crv":%q,"kty":%q,"x":%q,"y":%q}}`,
			k.nonce, p.Alg, p.Crv, p.Kty, p.X, p.Y)
		want := sha512.Sum384([]byte(canon))
		if req.TeeEvidence.Primary.Report_Data != base64.StdEncoding.EncodeToString(want[:]) || req.TeeEvidence.Primary.SVN != "1" {
			kbsErr(w, 401, "AttestationError", "report data mismatch")
			return
		}
		x, _ := base64.RawURLEncoding.DecodeString(p.X)
		y, _ := base64.RawURLEncoding.DecodeString(p.Y)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil || p.Kty != "EC" || p.Crv != "P-256" || p.Alg != "ECDH-ES+A256KW" {
			kbsErr(w, 400, "InvalidRequest", "bad tee-pubkey")
			return
		}
		k.pub = pub
		k.token = jwtWithExp(k.exp, k.sess)
		fmt.Fprintf(w, `{"token":%q}`, k.token)
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/kbs/v0/resource/"):
		k.gets.Add(1)
		if k.token == "" || r.Header.Get("Authorization") != "Bearer "+k.token {
			kbsErr(w, 401, "TokenNotFound", "no valid token")
			return
		}
		data, ok := k.resources[strings.TrimPrefix(r.URL.Path, "/kbs/v0/resource/")]
		if !ok {
			kbsErr(w, 404, "ResourceNotFound", "no such resource")
			return
		}
		w.Write(encryptTo(k.t, k.pub, jose.ECDH_ES_A256KW, data))
	default:
		kbsErr(w, 404, "PluginNotFound", r.URL.Path)
	}
}

func jwtWithExp(exp time.Time, salt string) string {
	e := base64.RawURLEncoding.EncodeToString
	return e([]byte(`{"alg":"ES256"}`)) + "." + e([]byte(fmt.Sprintf(`{"exp":%d,"jti":%q}`, exp.Unix(), salt))) + "." + e([]byte("sig"))
}

var fastBackoff = WithBackoff(Backoff{Attempts: 3, Base: time.Millisecond, Max: 2 * time.Millisecond})

func (k *fakeKBS) client(t *testing.T, initData string, opts ...Option) *Client {
	t.Helper()
	cfg, err := LoadConfig([]byte(fmt.Sprintf("[token_configs.kbs]\nurl = %q\n", k.srv.URL)), nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(cfg, Sample{}, initData, append([]Option{fastBackoff}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRCARAndResources(t *testing.T) {
	k := newFakeKBS(t, false)
	k.resources["default/key/1"] = []byte("key one")
	k.resources["default/key/2"] = []byte("key two")
	initData := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n"
	c := k.client(t, initData)
	ctx := context.Background()
	for _, uri := range []string{"kbs:///default/key/1", "default/key/2", "kbs://other-host/default/key/1"} {
		got, err := c.Resource(ctx, uri)
		if err != nil {
			t.Fatalf("%s: %v", uri, err)
		}
		if want := k.resources[strings.TrimPrefix(strings.TrimPrefix(uri, "kbs://other-host/"), "kbs:///")]; string(got) != string(want) {
			t.Fatalf("%s: %q", uri, got)
		}
	}
	if n := k.auths.Load(); n != 1 {
		t.Errorf("%d RCARs for three resources; the token must be reused", n)
	}
	if k.initData == nil || k.initData.Format != "toml" || k.initData.Body != initData {
		t.Errorf("init-data sent as %+v", k.initData)
	}
	tok, err := c.Token(ctx)
	if err != nil || tok != k.token {
		t.Errorf("token %q, %v", tok, err)
	}
	// Hostile paths never reach the KBS.
	gets := k.gets.Load()
	for _, bad := range []string{"kbs:///../key/1", "default/key/1/../../x", "kbs:///default/key/%2e%2e", "default/key/1?x"} {
		if _, err := c.Resource(ctx, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if k.gets.Load() != gets {
		t.Error("a hostile path was sent to the KBS")
	}
}

func TestNoInitDataOmitted(t *testing.T) {
	k := newFakeKBS(t, false)
	var raw string
	k.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/kbs/v0/attest" {
			b := make([]byte, 1<<16)
			n, _ := r.Body.Read(b)
			raw = string(b[:n])
			r.Body = http.NoBody
			k.mu.Lock()
			defer k.mu.Unlock()
			kbsErr(w, 401, "AttestationError", "stop here")
			return true
		}
		return false
	}
	_, err := k.client(t, "").Token(context.Background())
	var re *RefusedError
	if !errors.As(err, &re) || re.Type != "AttestationError" || re.Detail != "stop here" || re.Status != 401 {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(raw, "init-data") || !strings.Contains(raw, `"additional_evidence":""`) {
		t.Errorf("attest body %s", raw)
	}
	if !strings.Contains(err.Error(), "AttestationError") || strings.Contains(err.Error(), "https://") && !strings.Contains(err.Error(), k.srv.URL) {
		t.Errorf("message %q", err)
	}
}

func TestTokenExpiry(t *testing.T) {
	k := newFakeKBS(t, false)
	k.resources["a/b/c"] = []byte("x")
	now := time.Now()
	k.exp = now.Add(5 * time.Minute)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	c := k.client(t, "", WithClock(func() time.Time { return time.Unix(0, clock.Load()) }))
	ctx := context.Background()
	if _, err := c.Resource(ctx, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	clock.Store(now.Add(4 * time.Minute).UnixNano())
	if _, err := c.Resource(ctx, "a/b/c"); err != nil || k.auths.Load() != 1 {
		t.Fatalf("before exp: %v, %d RCARs", err, k.auths.Load())
	}
	clock.Store(now.Add(6 * time.Minute).UnixNano())
	k.exp = now.Add(time.Hour)
	if _, err := c.Resource(ctx, "a/b/c"); err != nil || k.auths.Load() != 2 {
		t.Fatalf("after exp: %v, %d RCARs (want a new one)", err, k.auths.Load())
	}
}

func TestReattestOn401(t *testing.T) {
	k := newFakeKBS(t, false)
	k.resources["a/b/c"] = []byte("x")
	c := k.client(t, "")
	ctx := context.Background()
	if _, err := c.Resource(ctx, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	k.token = "revoked" // the KBS forgot the token
	k.mu.Unlock()
	if got, err := c.Resource(ctx, "a/b/c"); err != nil || string(got) != "x" || k.auths.Load() != 2 {
		t.Fatalf("after revocation: %q, %v, %d RCARs", got, err, k.auths.Load())
	}
	// A resource policy that always says 401: one re-attestation, then a
	// forbidden error.
	k.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" {
			kbsErr(w, 401, "PolicyDeny", "resource policy denied")
			return true
		}
		return false
	}
	_, err := c.Resource(ctx, "a/b/c")
	var re *ResourceError
	if !errors.As(err, &re) || re.Status != 401 || re.Type != "PolicyDeny" || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("got %v", err)
	}
	if k.auths.Load() != 3 {
		t.Errorf("%d RCARs, want exactly one more", k.auths.Load())
	}
}

func TestResourceFailures(t *testing.T) {
	k := newFakeKBS(t, false)
	c := k.client(t, "")
	ctx := context.Background()
	_, err := c.Resource(ctx, "a/b/missing")
	var re *ResourceError
	if !errors.As(err, &re) || re.Status != 404 || re.Resource != "a/b/missing" || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("404: %v", err)
	}
	var calls atomic.Int32
	for name, tc := range map[string]struct {
		status int
		body   string
		check  func(error) bool
		calls  int32
	}{
		"403 plain": {403, "go away" + strings.Repeat("!", 2000), func(err error) bool {
			return errors.As(err, &re) && re.Status == 403 && strings.Contains(re.Body, "truncated") && len(err.Error()) < 800
		}, 1},
		"400 not retried": {400, `{"type":"x/InvalidRequest","detail":"d"}`, func(err error) bool { return errors.As(err, &re) && re.Type == "InvalidRequest" }, 1},
		"503 retried":     {503, "busy", func(err error) bool { return errors.As(err, &re) && re.Status == 503 }, 3},
		"bad JWE": {200, `{"protected":"e30","ciphertext":"AA"}`, func(err error) bool {
			var be *BadResponseError
			return errors.As(err, &be) && be.Field == "JWE"
		}, 1},
		"oversized": {200, strings.Repeat(" ", maxResourceBody+1), func(err error) bool {
			var be *BadResponseError
			return errors.As(err, &be) && be.Field == "body"
		}, 1},
	} {
		calls.Store(0)
		k.hook = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != "GET" {
				return false
			}
			calls.Add(1)
			w.WriteHeader(tc.status)
			w.Write([]byte(tc.body))
			return true
		}
		_, err := c.Resource(ctx, "a/b/c")
		if err == nil || !tc.check(err) || calls.Load() != tc.calls {
			t.Errorf("%s: %v (%d calls, want %d)", name, err, calls.Load(), tc.calls)
		}
	}
	// 503 twice, then success.
	k.hook = nil
	k.resources["a/b/c"] = []byte("ok")
	calls.Store(0)
	k.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" && calls.Add(1) <= 2 {
			w.WriteHeader(503)
			return true
		}
		return false
	}
	if got, err := c.Resource(ctx, "a/b/c"); err != nil || string(got) != "ok" {
		t.Errorf("after two 503s: %q, %v", got, err)
	}
}

func TestAuthFailures(t *testing.T) {
	for name, tc := range map[string]struct {
		handler func(w http.ResponseWriter)
		field   string // BadResponseError field; "" = other check
	}{
		"malformed JSON": {func(w http.ResponseWriter) { w.Write([]byte(`{"nonce":`)) }, "challenge"},
		"no nonce":       {func(w http.ResponseWriter) { w.Write([]byte(`{"extra-params":""}`)) }, "nonce"},
		"no cookie":      {func(w http.ResponseWriter) { w.Write([]byte(`{"nonce":"bm9uY2U="}`)) }, "kbs-session-id cookie"},
		"oversized": {func(w http.ResponseWriter) {
			w.Write([]byte(`{"nonce":"` + strings.Repeat("A", maxChallengeBody) + `"}`))
		}, "body"},
		"wrong status": {func(w http.ResponseWriter) { w.WriteHeader(418); w.Write([]byte("teapot")) }, "status"},
		"bad hash": {func(w http.ResponseWriter) {
			http.SetCookie(w, &http.Cookie{Name: "kbs-session-id", Value: "s"})
			w.Write([]byte(`{"nonce":"bm9uY2U=","extra-params":{"selected-hash-algorithm":"md5"}}`))
		}, "extra-params"},
	} {
		k := newFakeKBS(t, false)
		k.hook = func(w http.ResponseWriter, r *http.Request) bool { tc.handler(w); return true }
		_, err := k.client(t, "").Token(context.Background())
		var be *BadResponseError
		if !errors.As(err, &be) || be.Field != tc.field || !strings.Contains(err.Error(), k.srv.URL+"/kbs/v0/auth") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A token that is not a JWT.
	k := newFakeKBS(t, false)
	k.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/kbs/v0/attest" {
			w.Write([]byte(`{"token":"not-a-jwt"}`))
			return true
		}
		return false
	}
	var be *BadResponseError
	if _, err := k.client(t, "").Token(context.Background()); !errors.As(err, &be) || be.Field != "token" {
		t.Errorf("bad token: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	k := newFakeKBS(t, false)
	url := k.srv.URL
	k.srv.Close()
	c := k.client(t, "")
	_, err := c.Resource(context.Background(), "a/b/c")
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.URL != url+"/kbs/v0/auth" || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("got %v", err)
	}
	// Cancelling the caller's context ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Token(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestPinnedCertificate(t *testing.T) {
	k := newFakeKBS(t, true)
	k.resources["a/b/c"] = []byte("tls")
	pinned := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.srv.Certificate().Raw}))
	mk := func(cert string) *Client {
		cfg, err := LoadConfig(nil, []byte(fmt.Sprintf("[kbc]\nname = \"cc_kbc\"\nurl = %q\nkbs_cert = %q\n", k.srv.URL, cert)))
		if err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(cfg, Sample{}, "", fastBackoff)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if got, err := mk(pinned).Resource(context.Background(), "a/b/c"); err != nil || string(got) != "tls" {
		t.Fatalf("pinned: %q, %v", got, err)
	}
	// Any other certificate: the handshake fails, no system-root fallback.
	_, err := mk(otherCertPEM(t)).Resource(context.Background(), "a/b/c")
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("mismatch: %v", err)
	}
}

func TestConcurrentCallersShareOneRCAR(t *testing.T) {
	k := newFakeKBS(t, false)
	k.resources["a/b/c"] = []byte("x")
	release := make(chan struct{})
	k.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/kbs/v0/auth" {
			<-release
		}
		return false
	}
	c := k.client(t, "")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Resource(context.Background(), "a/b/c")
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := k.auths.Load(); n != 1 {
		t.Errorf("%d RCARs for 8 concurrent callers", n)
	}
}
