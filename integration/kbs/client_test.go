package kbs

// A deliberately small RCAR client for the unit tests, written from the
// protocol description (specs.md §2), not shared with the guest's client.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestKBS starts a server on httptest with a controllable clock.
func newTestKBS(t *testing.T) (*Server, *httptest.Server, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Now()}
	s := New(Options{Now: clock.Now, Logf: t.Logf})
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, hs, clock
}

type rcarClient struct {
	t      *testing.T
	base   string
	http   *http.Client
	ec     *ecdsa.PrivateKey
	rsa    *rsa.PrivateKey
	cookie string
	nonce  string
}

func newClient(t *testing.T, base string) *rcarClient {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &rcarClient{t: t, base: base, http: http.DefaultClient, ec: key}
}

// response is one HTTP answer with Trustee's error body decoded if present.
type response struct {
	status  int
	body    []byte
	errType string // the error type without the URL prefix
	detail  string
	header  http.Header
}

func (c *rcarClient) do(method, path string, body []byte, hdr map[string]string) response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, body: b, header: resp.Header}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Type, Detail string }
		if err := json.Unmarshal(b, &e); err != nil || !strings.HasPrefix(e.Type, ErrorTypePrefix) || e.Detail == "" {
			c.t.Fatalf("%s %s: %d with a body that is not Trustee's ErrorInformation: %s", method, path, resp.StatusCode, b)
		}
		r.errType, r.detail = strings.TrimPrefix(e.Type, ErrorTypePrefix), e.Detail
	}
	return r
}

func (c *rcarClient) authRaw(body string) response {
	c.t.Helper()
	r := c.do("POST", "/kbs/v0/auth", []byte(body), nil)
	if r.status == http.StatusOK {
		var ch struct {
			Nonce       string `json:"nonce"`
			ExtraParams any    `json:"extra-params"`
		}
		if err := json.Unmarshal(r.body, &ch); err != nil {
			c.t.Fatalf("challenge %s: %v", r.body, err)
		}
		c.nonce = ch.Nonce
		for _, ck := range (&http.Response{Header: r.header}).Cookies() {
			if ck.Name == SessionCookie {
				c.cookie = ck.Value
			}
		}
	}
	return r
}

func (c *rcarClient) auth(tee string) {
	c.t.Helper()
	r := c.authRaw(fmt.Sprintf(`{"version":"0.4.0","tee":%q,"extra-params":{"supported-hash-algorithms":["sha384"]}}`, tee))
	if r.status != http.StatusOK {
		c.t.Fatalf("auth: %d %s", r.status, r.body)
	}
}

// jwkJSON is the tee-pubkey as the client sends it, members already in JCS
// order so the binding below can be spelled out by hand.
func (c *rcarClient) jwkJSON() string {
	if c.rsa != nil {
		e := big.NewInt(int64(c.rsa.E)).Bytes()
		return fmt.Sprintf(`{"alg":"RSA-OAEP-256","e":%q,"kty":"RSA","n":%q}`, b64url.EncodeToString(e), b64url.EncodeToString(c.rsa.N.Bytes()))
	}
	pt, _ := c.ec.PublicKey.Bytes()
	return fmt.Sprintf(`{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":%q,"y":%q}`, b64url.EncodeToString(pt[1:33]), b64url.EncodeToString(pt[33:]))
}

// reportData is sha384 of the canonical runtime data, written out
// literally (sorted members, no spaces) rather than via Canonicalize, so
// this test does not take the server's canonicaliser on trust.
func reportData(nonce, jwk string) string {
	rd := fmt.Sprintf(`{"additional-evidence":"","nonce":%q,"tee-pubkey":%s}`, nonce, jwk)
	sum := sha512.Sum384([]byte(rd))
	return base64.StdEncoding.EncodeToString(sum[:])
}

type attestOpts struct {
	nonce      string // default: the challenge's
	reportData string // default: bound to this client's key and nonce
	initData   *string
}

func (c *rcarClient) attestBody(o attestOpts) []byte {
	nonce := c.nonce
	if o.nonce != "" {
		nonce = o.nonce
	}
	rd := o.reportData
	if rd == "" {
		rd = reportData(nonce, c.jwkJSON())
	}
	initJSON := "null"
	if o.initData != nil {
		b, _ := json.Marshal(map[string]string{"format": "toml", "body": *o.initData})
		initJSON = string(b)
	}
	return fmt.Appendf(nil, `{"init-data":%s,"runtime-data":{"nonce":%q,"tee-pubkey":%s},"tee-evidence":{"primary_evidence":{"svn":"1","report_data":%q},"additional_evidence":""}}`,
		initJSON, nonce, c.jwkJSON(), rd)
}

func (c *rcarClient) attest(o attestOpts) response {
	c.t.Helper()
	return c.do("POST", "/kbs/v0/attest", c.attestBody(o), map[string]string{"Cookie": SessionCookie + "=" + c.cookie})
}

func (c *rcarClient) mustAttest(o attestOpts) string {
	c.t.Helper()
	r := c.attest(o)
	if r.status != http.StatusOK {
		c.t.Fatalf("attest: %d %s", r.status, r.body)
	}
	var tok struct{ Token string }
	if err := json.Unmarshal(r.body, &tok); err != nil || tok.Token == "" {
		c.t.Fatalf("attest body %s", r.body)
	}
	return tok.Token
}

// resource fetches with the session cookie, or with bearer when non-empty.
func (c *rcarClient) resource(path, bearer string) response {
	c.t.Helper()
	hdr := map[string]string{}
	if bearer != "" {
		hdr["Authorization"] = "Bearer " + bearer
	} else if c.cookie != "" {
		hdr["Cookie"] = SessionCookie + "=" + c.cookie
	}
	return c.do("GET", "/kbs/v0/resource/"+path, nil, hdr)
}

// decrypt opens the flattened JWE with go-jose and the client's private key.
func (c *rcarClient) decrypt(body []byte) []byte {
	c.t.Helper()
	var flat map[string]any
	if err := json.Unmarshal(body, &flat); err != nil {
		c.t.Fatal(err)
	}
	for _, k := range []string{"protected", "encrypted_key", "iv", "ciphertext", "tag"} {
		if _, ok := flat[k].(string); !ok {
			c.t.Fatalf("JWE lacks %q: %s", k, body)
		}
	}
	var key any = c.ec
	algs := []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}
	if c.rsa != nil {
		key, algs = c.rsa, []jose.KeyAlgorithm{jose.RSA_OAEP_256}
	}
	obj, err := jose.ParseEncryptedJSON(string(body), algs, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		c.t.Fatalf("parse JWE %s: %v", body, err)
	}
	pt, err := obj.Decrypt(key)
	if err != nil {
		c.t.Fatalf("decrypt JWE: %v", err)
	}
	return pt
}

func expectRefusal(t *testing.T, what string, r response, status int, errType, detailPart string) {
	t.Helper()
	if r.status != status || r.errType != errType || !strings.Contains(r.detail, detailPart) {
		t.Errorf("%s: got %d %s %q, want %d %s containing %q", what, r.status, r.errType, r.detail, status, errType, detailPart)
	}
}
