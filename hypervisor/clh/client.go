package clh

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
)

// apiClient speaks Cloud Hypervisor's REST API over its unix socket.
type apiClient struct {
	socket string
	http   *http.Client
}

func newAPIClient(socket string) *apiClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		// A fresh connection per request: the API is local and rarely
		// used, and a kept-alive connection the VMM has dropped would make
		// a non-replayable PUT fail.
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	return &apiClient{socket: socket, http: &http.Client{Transport: tr}}
}

// close drops idle connections so that no descriptor outlives the VM.
func (c *apiClient) close() { c.http.CloseIdleConnections() }

// apiError is a non-2xx answer from Cloud Hypervisor.
type apiError struct {
	Method, Op string
	Status     int
	Body       string
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("cloud-hypervisor %s %s: %d %s", e.Method, e.Op, e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Unwrap maps the status to an errdefs class so callers can test it.
func (e *apiError) Unwrap() error {
	switch e.Status {
	case http.StatusBadRequest:
		return errdefs.ErrInvalidArgument
	case http.StatusNotFound:
		return errdefs.ErrNotFound
	case http.StatusMethodNotAllowed:
		return errdefs.ErrFailedPrecondition
	case http.StatusConflict:
		return errdefs.ErrAlreadyExists
	case http.StatusTooManyRequests:
		return errdefs.ErrUnavailable
	}
	return errdefs.ErrUnknown
}

// badAnswer is a 2xx answer that does not say what the schema promises.
// Like apiError it means the VMM is up, so waiting for it will not help.
type badAnswer struct{ msg string }

func (e *badAnswer) Error() string { return e.msg }
func (e *badAnswer) Unwrap() error { return errdefs.ErrUnknown }

// errorBody renders an error body for a message. Cloud Hypervisor sends a
// JSON array of strings (the error chain, outermost first); join it. Other
// bodies are shown trimmed and bounded.
func errorBody(b []byte) string {
	var chain []string
	if json.Unmarshal(b, &chain) == nil && len(chain) > 0 {
		return strings.Join(chain, ": ")
	}
	s := strings.TrimSpace(string(b))
	const maxBody = 1024
	if len(s) > maxBody {
		s = s[:maxBody] + "..."
	}
	return s
}

// do sends one request. in (if non-nil) is sent as JSON; out (if non-nil)
// receives a 200 body. A 204 leaves out untouched.
func (c *apiClient) do(ctx context.Context, method, op string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("cloud-hypervisor %s %s: encode request: %w", method, op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost/api/v1/"+op, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s %s on %s: %w", method, op, c.socket, err)
	}
	defer resp.Body.Close()
	const maxResponse = 1 << 20
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s %s: read response: %w", method, op, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &apiError{Method: method, Op: op, Status: resp.StatusCode, Body: errorBody(b)}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &badAnswer{fmt.Sprintf("cloud-hypervisor %s %s: decode response %q: %v", method, op, errorBody(b), err)}
	}
	return nil
}

func (c *apiClient) put(ctx context.Context, op string, in, out any) error {
	return c.do(ctx, http.MethodPut, op, in, out)
}

func (c *apiClient) get(ctx context.Context, op string, out any) error {
	return c.do(ctx, http.MethodGet, op, nil, out)
}

func (c *apiClient) ping(ctx context.Context) (pingResponse, error) {
	var r pingResponse
	if err := c.get(ctx, "vmm.ping", &r); err != nil {
		return r, err
	}
	if r.Version == "" {
		return r, &badAnswer{"cloud-hypervisor GET vmm.ping: answer has no version (required)"}
	}
	return r, nil
}

func (c *apiClient) info(ctx context.Context) (vmInfo, error) {
	var r vmInfo
	if err := c.get(ctx, "vm.info", &r); err != nil {
		return r, err
	}
	if r.State == "" {
		return r, &badAnswer{"cloud-hypervisor GET vm.info: answer has no state (required)"}
	}
	return r, nil
}
