package clh

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// apiClient speaks Cloud Hypervisor's REST API over its unix socket.
//
// Each request is written on a fresh connection with net/http's wire
// helpers (Request.Write, ReadResponse) rather than an http.Client: the
// Client's Transport brings TLS, HTTP/2 and proxy support into the binary,
// about 2 MB of the shim that every pod's shim process maps for a local,
// plain HTTP/1.1 socket. A fresh connection per request also means a
// kept-alive connection the VMM has dropped cannot make a non-replayable PUT
// fail, and no descriptor outlives a request.
type apiClient struct {
	socket string
}

func newAPIClient(socket string) *apiClient { return &apiClient{socket: socket} }

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
// receives a 200 body. A 204 leaves out untouched. files (if any) are
// passed to the VMM with the request (see sendRequest).
func (c *apiClient) do(ctx context.Context, method, op string, in, out any, files []*os.File) error {
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
	b, status, err := c.roundTrip(ctx, req, files)
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s %s on %s: %w", method, op, c.socket, err)
	}
	if status < 200 || status > 299 {
		return &apiError{Method: method, Op: op, Status: status, Body: errorBody(b)}
	}
	if out == nil || status == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &badAnswer{fmt.Sprintf("cloud-hypervisor %s %s: decode response %q: %v", method, op, errorBody(b), err)}
	}
	return nil
}

// maxResponse bounds the body read from the VMM.
const maxResponse = 1 << 20

// roundTrip sends req (and files) on a new connection to the API socket
// and returns the response's status and (bounded) body. ctx bounds the
// whole exchange.
func (c *apiClient) roundTrip(ctx context.Context, req *http.Request, files []*os.File) ([]byte, int, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	// A cancelled ctx unblocks a read or write in progress.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req.Close = true // "Connection: close": the VMM ends the response with the connection
	if err := sendRequest(conn, req, files); err != nil {
		return nil, 0, ctxErr(ctx, fmt.Errorf("send request: %w", err))
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, 0, ctxErr(ctx, fmt.Errorf("read response: %w", err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, 0, ctxErr(ctx, fmt.Errorf("read response: %w", err))
	}
	return b, resp.StatusCode, nil
}

// sendRequest writes req on conn. files travel as one SCM_RIGHTS message
// on the request's first bytes: Cloud Hypervisor's HTTP server (micro_http)
// gives a request every descriptor received on its connection since the
// previous request, and the kernel gives the VMM its own copies at send
// time, so the files may be closed as soon as this returns.
func sendRequest(conn net.Conn, req *http.Request, files []*os.File) error {
	if len(files) == 0 {
		return req.Write(conn)
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("cannot pass descriptors on a %T", conn)
	}
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		return err
	}
	fds := make([]int, 0, len(files))
	for _, f := range files {
		// SyscallConn, not Fd: Fd would switch a non-blocking file to
		// blocking mode, a flag the file description shares with the
		// VMM's copy.
		sc, err := f.SyscallConn()
		if err == nil {
			err = sc.Control(func(fd uintptr) { fds = append(fds, int(fd)) })
		}
		if err != nil {
			return fmt.Errorf("file %s: %w", f.Name(), err)
		}
	}
	rights := syscall.UnixRights(fds...)
	n, oobn, err := uc.WriteMsgUnix(buf.Bytes(), rights, nil)
	// The descriptors must stay open until sendmsg has taken its references.
	runtime.KeepAlive(files)
	if err != nil {
		return err
	}
	if oobn != len(rights) {
		return fmt.Errorf("sent %d of %d bytes of descriptors", oobn, len(rights))
	}
	// A stream socket may take part of the data; the rest follows plainly.
	// Nothing more when all went: the VMM may already have answered and
	// closed, and even an empty write would then fail with EPIPE.
	if n < buf.Len() {
		_, err = conn.Write(buf.Bytes()[n:])
	}
	return err
}

// ctxErr names the context's error when it is why an I/O call failed (the
// call itself only reports a deadline on the connection).
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

func (c *apiClient) put(ctx context.Context, op string, in, out any) error {
	return c.do(ctx, http.MethodPut, op, in, out, nil)
}

// putFiles is put with files passed to the VMM (vm.add-net's tap fds).
func (c *apiClient) putFiles(ctx context.Context, op string, in any, files []*os.File, out any) error {
	return c.do(ctx, http.MethodPut, op, in, out, files)
}

func (c *apiClient) get(ctx context.Context, op string, out any) error {
	return c.do(ctx, http.MethodGet, op, nil, out, nil)
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
