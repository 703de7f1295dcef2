package attest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ProtocolVersion is the KBS protocol version; Trustee requires exactly it.
const ProtocolVersion = "0.4.0"

// sessionCookie is the KBS session cookie set by /auth.
const sessionCookie = "kbs-session-id"

// Client runs the Trustee KBS protocol (RCAR: request, challenge,
// attestation, response) for one guest and fetches resources with the token
// it gets. It is safe for concurrent use: one RCAR runs at a time, and
// callers that need a token meanwhile wait for it and share its result.
type Client struct {
	cfg      *Config
	attester Attester
	initData string // the exact init-data TOML; "" when none
	backoff  Backoff
	now      func() time.Time

	attestHTTP, resourceHTTP *http.Client

	mu       sync.Mutex
	cur      *session  // the attested session; nil before the first RCAR
	inflight *rcarCall // the RCAR under way
}

// session is one successful RCAR: the ephemeral key the KBS wraps resources
// to, the token certifying it, and the KBS session cookie.
type session struct {
	key    *teeKey
	token  *token
	cookie string
}

type rcarCall struct {
	done chan struct{}
	s    *session
	err  error
}

// Option adjusts a Client.
type Option func(*Client)

// WithBackoff replaces DefaultBackoff.
func WithBackoff(b Backoff) Option { return func(c *Client) { c.backoff = b } }

// WithClock replaces time.Now for token expiry (tests).
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// NewClient builds a client. initData is the exact init-data TOML text the
// TEE's launch data binds ("" when the pod has none); the KBS recomputes its
// digest, so it must be byte-identical to what was measured.
func NewClient(cfg *Config, attester Attester, initData string, opts ...Option) (*Client, error) {
	if cfg == nil || cfg.Attest == nil {
		return nil, &ConfigError{File: AAFile + " / " + CDHFile, Msg: "no KBS configured", Err: ErrNoKBS}
	}
	if attester == nil {
		return nil, errors.New("attest: no attester")
	}
	c := &Client{cfg: cfg, attester: attester, initData: initData, backoff: DefaultBackoff, now: time.Now}
	for _, o := range opts {
		o(c)
	}
	c.attestHTTP = newHTTPClient(cfg.Attest)
	c.resourceHTTP = c.attestHTTP
	if cfg.Resource != nil && cfg.Resource != cfg.Attest {
		c.resourceHTTP = newHTTPClient(cfg.Resource)
	}
	return c, nil
}

// Token returns a valid attestation token, attesting when there is none or
// the last one expired.
func (c *Client) Token(ctx context.Context) (string, error) {
	s, err := c.session(ctx, nil)
	if err != nil {
		return "", err
	}
	return s.token.raw, nil
}

// session returns the current session if its token is still valid and it is
// not stale (the one a caller just saw refused); otherwise it joins or
// starts an RCAR.
func (c *Client) session(ctx context.Context, stale *session) (*session, error) {
	c.mu.Lock()
	if s := c.cur; s != nil && s != stale && s.token.valid(c.now()) {
		c.mu.Unlock()
		return s, nil
	}
	call := c.inflight
	if call == nil {
		call = &rcarCall{done: make(chan struct{})}
		c.inflight = call
		// The RCAR outlives a caller that gives up: others may be waiting
		// for it. Retries bound its duration.
		go c.runRCAR(context.WithoutCancel(ctx), call)
	}
	c.mu.Unlock()
	select {
	case <-call.done:
		return call.s, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) runRCAR(ctx context.Context, call *rcarCall) {
	s, err := retry(ctx, c.backoff, func() (*session, error) { return c.rcar(ctx) })
	c.mu.Lock()
	if err == nil {
		c.cur = s
	}
	c.inflight = nil
	c.mu.Unlock()
	call.s, call.err = s, err
	close(call.done)
}

// The protocol's JSON bodies (kbs-types: Request, Challenge, Attestation).
type (
	authRequest struct {
		Version     string `json:"version"`
		Tee         string `json:"tee"`
		ExtraParams any    `json:"extra-params"`
	}
	challenge struct {
		Nonce       string          `json:"nonce"`
		ExtraParams json.RawMessage `json:"extra-params"`
	}
	initDataBody struct {
		Format string `json:"format"`
		Body   string `json:"body"`
	}
	runtimeData struct {
		Nonce     string    `json:"nonce"`
		TeePubKey PublicJWK `json:"tee-pubkey"`
	}
	teeEvidence struct {
		Primary    json.RawMessage `json:"primary_evidence"`
		Additional string          `json:"additional_evidence"`
	}
	attestRequest struct {
		InitData    *initDataBody `json:"init-data,omitempty"`
		RuntimeData runtimeData   `json:"runtime-data"`
		TeeEvidence teeEvidence   `json:"tee-evidence"`
	}
)

// supportedHashes is sent as extra-params, as guest-components does, so a
// KBS may pick the runtime-data hash ("selected-hash-algorithm").
var supportedHashes = []HashAlgorithm{SHA256, SHA384, SHA512}

// rcar runs one attestation. A failure that may pass (network, 5xx) is
// transient; the whole exchange is then redone with a fresh nonce.
func (c *Client) rcar(ctx context.Context) (*session, error) {
	base := c.cfg.Attest.URL + "/kbs/v0/"
	key, err := newTEEKey(c.cfg.Key)
	if err != nil {
		return nil, err
	}
	// 1. Request → challenge.
	req, _ := json.Marshal(authRequest{ProtocolVersion, c.attester.Tee(),
		map[string]any{"supported-hash-algorithms": supportedHashes}})
	x, err := send(ctx, c.attestHTTP, http.MethodPost, base+"auth", req, nil, maxChallengeBody)
	if err != nil {
		return nil, err
	}
	if err := attestStatus(x, base+"auth"); err != nil {
		return nil, err
	}
	var ch challenge
	if err := json.Unmarshal(x.body, &ch); err != nil {
		return nil, &BadResponseError{URL: base + "auth", Field: "challenge", Err: errors.New("not a JSON object {nonce, extra-params}")}
	}
	if ch.Nonce == "" {
		return nil, &BadResponseError{URL: base + "auth", Field: "nonce", Err: errors.New("missing or empty")}
	}
	cookie := ""
	for _, ck := range (&http.Response{Header: x.header}).Cookies() {
		if ck.Name == sessionCookie {
			cookie = ck.Value
		}
	}
	if cookie == "" {
		return nil, &BadResponseError{URL: base + "auth", Field: sessionCookie + " cookie", Err: errors.New("missing")}
	}
	alg, err := selectedHash(ch.ExtraParams)
	if err != nil {
		return nil, &BadResponseError{URL: base + "auth", Field: "extra-params", Err: err}
	}
	// 2. Evidence binding the nonce and the key.
	_, digest, err := RuntimeData(alg, ch.Nonce, key.pub, "")
	if err != nil {
		return nil, err
	}
	ev, err := c.attester.Evidence(digest)
	if err != nil {
		return nil, fmt.Errorf("%s evidence: %w", c.attester.Tee(), err)
	}
	body := attestRequest{
		RuntimeData: runtimeData{Nonce: ch.Nonce, TeePubKey: key.pub},
		TeeEvidence: teeEvidence{Primary: ev, Additional: ""},
	}
	if c.initData != "" {
		body.InitData = &initDataBody{Format: "toml", Body: c.initData}
	}
	req, err = json.Marshal(body)
	if err != nil {
		return nil, err
	}
	// 3. Attestation → token.
	hdr := http.Header{"Cookie": {sessionCookie + "=" + cookie}}
	x, err = send(ctx, c.attestHTTP, http.MethodPost, base+"attest", req, hdr, maxTokenBody)
	if err != nil {
		return nil, err
	}
	if err := attestStatus(x, base+"attest"); err != nil {
		return nil, err
	}
	var resp struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(x.body, &resp); err != nil {
		return nil, &BadResponseError{URL: base + "attest", Field: "token", Err: errors.New("response is not a JSON object {token}")}
	}
	tok, err := parseToken(resp.Token)
	if err != nil {
		return nil, &BadResponseError{URL: base + "attest", Field: "token", Err: err}
	}
	return &session{key: key, token: tok, cookie: cookie}, nil
}

// attestStatus judges /auth and /attest answers: 200 goes on, a KBS error
// body is a refusal (5xx ones retried first), anything else a bad response.
func attestStatus(x *exchange, url string) error {
	if x.status == http.StatusOK {
		return nil
	}
	if t, d, ok := parseKBSError(x.body); ok && x.status < 500 {
		return &RefusedError{URL: url, Status: x.status, Type: t, Detail: d}
	}
	return serverError(x, &BadResponseError{URL: url, Field: "status", Err: statusError(x)})
}

// selectedHash reads the challenge's extra-params: a KBS may select the
// runtime-data hash; otherwise sha384. Trustee sends "" for no parameters.
func selectedHash(extra json.RawMessage) (HashAlgorithm, error) {
	var p struct {
		Selected *string `json:"selected-hash-algorithm"`
	}
	if json.Unmarshal(extra, &p) != nil || p.Selected == nil {
		return SHA384, nil
	}
	alg := HashAlgorithm(strings.ToLower(*p.Selected))
	if _, err := alg.hash(); err != nil {
		return "", err
	}
	return alg, nil
}
