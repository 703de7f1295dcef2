package attest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Response size bounds: the KBS is outside the TEE, and a hostile one must
// not make the guest buffer without limit.
const (
	maxChallengeBody = 64 << 10 // {"nonce","extra-params"}
	maxTokenBody     = 2 << 20  // an EAR JWT carries the init-data claims
	maxResourceBody  = 16 << 20 // JWE of a resource (keys, policies, configs)
	maxErrorBody     = 64 << 10 // read of a refusal; quoted clipped
)

// Backoff bounds retries of transient failures (network errors, HTTP 5xx):
// Attempts tries in all, waiting Base, 2*Base, ... up to Max in between.
// 4xx answers are refusals and are never retried.
type Backoff struct {
	Attempts  int
	Base, Max time.Duration
}

// DefaultBackoff: four tries over about 3.5 s.
var DefaultBackoff = Backoff{Attempts: 4, Base: 500 * time.Millisecond, Max: 4 * time.Second}

// requestTimeout bounds one HTTP exchange, as guest-components' 60 s
// KBS_REQ_TIMEOUT_SEC does.
const requestTimeout = 60 * time.Second

// newHTTPClient talks to one endpoint. With a pinned certificate the pool
// holds only it: no system roots. Redirects are not followed (a KBS has no
// reason to redirect, and the bearer token must go nowhere else), nor are
// proxies from the environment.
func newHTTPClient(ep *Endpoint) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ep.pool},
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        4,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       requestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// exchange is one HTTP answer, read within its bound.
type exchange struct {
	status int
	header http.Header
	body   []byte
}

// transient marks an error worth retrying.
type transient struct{ err error }

func (t *transient) Error() string { return t.err.Error() }
func (t *transient) Unwrap() error { return t.err }

// send does one request. A network failure is a transient
// *UnreachableError; a body over limit is a *BadResponseError. Status codes
// are the caller's to judge.
func send(ctx context.Context, hc *http.Client, method, url string, body []byte, hdr http.Header, limit int64) (*exchange, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, &BadResponseError{URL: url, Field: "request", Err: err}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// url.Error repeats method and URL; keep the cause.
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return nil, &transient{&UnreachableError{URL: url, Err: err}}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		limit = maxErrorBody
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &transient{&UnreachableError{URL: url, Err: fmt.Errorf("reading the response: %w", err)}}
	}
	if int64(len(b)) > limit {
		if resp.StatusCode != http.StatusOK {
			b = b[:limit] // a refusal is only quoted, clipped
		} else {
			return nil, &BadResponseError{URL: url, Field: "body", Err: fmt.Errorf("larger than %d bytes", limit)}
		}
	}
	return &exchange{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// retry runs op until it succeeds, fails with a non-transient error, the
// attempts run out or ctx ends. It returns the last error unwrapped from
// transient.
func retry[T any](ctx context.Context, b Backoff, op func() (T, error)) (T, error) {
	attempts := max(b.Attempts, 1)
	delay := b.Base
	var zero T
	for i := 1; ; i++ {
		v, err := op()
		var t *transient
		if err == nil || !errors.As(err, &t) {
			return v, err
		}
		if i >= attempts {
			return zero, t.err
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return zero, fmt.Errorf("%w (after: %v)", ctx.Err(), t.err)
		case <-timer.C:
		}
		delay = min(delay*2, b.Max)
	}
}

// serverError is a 5xx: transient. What it becomes after the last attempt is
// given by final.
func serverError(x *exchange, final error) error {
	if x.status >= 500 {
		return &transient{final}
	}
	return final
}

// statusError describes an unexpected status with the clipped body.
func statusError(x *exchange) error {
	if t, d, ok := parseKBSError(x.body); ok {
		return fmt.Errorf("HTTP %d: %s: %s", x.status, orUnknown(t), d)
	}
	return fmt.Errorf("HTTP %d: %s", x.status, clip(string(x.body), maxErrorText))
}
