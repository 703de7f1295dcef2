// Package agent is the host side of the guest agent connection: one ttrpc
// client over vsock port 1024 carrying containerd's task API and the coco
// agent API, plus one vsock connection per stdio stream on port 1025.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Dialer connects to a guest vsock port; hypervisor.VM satisfies it. Dial
// may retry until ctx is done.
type Dialer interface {
	Dial(ctx context.Context, port uint32) (net.Conn, error)
}

// healthAttempt bounds one Health call while the guest boots.
const healthAttempt = 2 * time.Second

// Client is a connection to the guest agent.
//
// Lifecycle: Dial (the agent answered Health) → calls, streams → Close.
// Errors from the guest come back as errdefs classes (errdefs.IsNotFound,
// IsInvalidArgument, IsPermissionDenied, ...) with the guest's message.
type Client struct {
	d      Dialer
	conn   net.Conn
	ttrpc  *ttrpc.Client
	task   taskAPI.TTRPCTaskService
	agent  api.AgentClient
	health *api.HealthResponse
	// began and sent time the handshake on the host clock: the connection
	// in hand, the Health request sent.
	began, sent time.Time
	// guestZero is the host time of the guest clock's zero (the kernel's
	// start), estimated from Health: the guest read its clock halfway
	// through the round trip, give or take half of it.
	guestZero time.Time

	closeOnce sync.Once
}

// Dial connects to the agent and waits until it answers Health, retrying
// until ctx is done. The error names the last failure.
func Dial(ctx context.Context, d Dialer) (*Client, error) {
	var last error
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, err := dialOnce(ctx, d)
		if err == nil {
			return c, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("guest agent on vsock port %d not ready after %d attempt(s): %w (last error: %v)", api.AgentPort, attempt, ctx.Err(), last)
		case <-time.After(backoff):
		}
		if backoff < 500*time.Millisecond {
			backoff *= 2
		}
	}
}

func dialOnce(ctx context.Context, d Dialer) (*Client, error) {
	conn, err := d.Dial(ctx, api.AgentPort)
	if err != nil {
		return nil, err
	}
	return NewClient(ctx, conn, d)
}

// NewClient makes a Client of conn, a connection on which the guest agent
// serves its API (the one it opened to the host's ReadyPort, or one dialled
// to AgentPort), and checks it with one Health call; conn is closed on
// error. d dials the stdio stream connections.
func NewClient(ctx context.Context, conn net.Conn, d Dialer) (*Client, error) {
	began := time.Now()
	tc := ttrpc.NewClient(conn, ttrpc.WithUnaryClientInterceptor(nativeErrors))
	c := &Client{d: d, conn: conn, ttrpc: tc, task: taskAPI.NewTTRPCTaskClient(tc), agent: api.NewAgentClient(tc)}
	hctx, cancel := context.WithTimeout(ctx, healthAttempt)
	defer cancel()
	sent := time.Now()
	h, err := c.agent.Health(hctx, &api.HealthRequest{})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("health: %w", err)
	}
	answered := time.Now()
	c.health, c.began, c.sent = h, began, sent
	if h.GetNowNs() > 0 {
		c.guestZero = sent.Add(answered.Sub(sent) / 2).Add(-time.Duration(h.GetNowNs()))
	}
	return c, nil
}

// nativeErrors turns the guest's status errors back into errdefs classes.
// ttrpc checks the response status after the interceptor, so the status is
// converted here and returned as the call's error.
func nativeErrors(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, _ *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
	if err := invoke(ctx, req, resp); err != nil {
		return errgrpc.ToNative(err)
	}
	if st := resp.Status; st != nil && st.Code != int32(codes.OK) {
		return errgrpc.ToNative(status.ErrorProto(st))
	}
	return nil
}

// Health is the agent's answer to the Health call Dial made.
func (c *Client) Health() *api.HealthResponse { return c.health }

// HandshakeTimes are when the client had its connection and when it sent
// the Health request that Health answers, on the host clock.
func (c *Client) HandshakeTimes() (began, sent time.Time) { return c.began, c.sent }

// GuestClockZero is when, on the host's clock, the guest's clock read zero
// (the guest kernel's start), to within half a Health round trip; zero
// when the agent does not report its clock.
func (c *Client) GuestClockZero() time.Time { return c.guestZero }

// Task is containerd's task API served by the guest.
func (c *Client) Task() taskAPI.TTRPCTaskService { return c.task }

// Agent is the coco agent API.
func (c *Client) Agent() api.AgentClient { return c.agent }

// OpenStream connects one stdio stream of a guest process before the task
// Create or Exec that names it (execID "" or "-" is the init process; kind
// is stdin, stdout or stderr). For stdin, CloseWrite on the returned
// connection is the process's EOF.
func (c *Client) OpenStream(ctx context.Context, containerID, execID, kind string) (net.Conn, error) {
	if execID == api.InitExec {
		execID = ""
	}
	h := api.StreamHeader{ContainerID: containerID, ExecID: execID, Kind: kind}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	conn, err := c.d.Dial(ctx, api.StreamPort)
	if err != nil {
		return nil, fmt.Errorf("dial stream port %d: %w", api.StreamPort, err)
	}
	if err := handshake(ctx, conn, h); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// handshake sends the header and reads the one-line answer byte by byte,
// so that no stream data is consumed.
func handshake(ctx context.Context, conn net.Conn, h api.StreamHeader) error {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
		defer conn.SetDeadline(time.Time{})
	}
	if _, err := conn.Write([]byte(h.String())); err != nil {
		return fmt.Errorf("stream handshake %s: %w", strings.TrimSpace(h.String()), err)
	}
	line, err := readLine(conn)
	if err != nil {
		return fmt.Errorf("stream handshake %s: no answer: %w", strings.TrimSpace(h.String()), err)
	}
	switch {
	case line == "OK":
		return nil
	case strings.HasPrefix(line, "ERR "):
		reason := strings.TrimPrefix(line, "ERR ")
		var cls error = errdefs.ErrUnknown
		switch {
		case strings.Contains(reason, errdefs.ErrAlreadyExists.Error()):
			cls = errdefs.ErrAlreadyExists
		case strings.Contains(reason, errdefs.ErrInvalidArgument.Error()):
			cls = errdefs.ErrInvalidArgument
		case strings.Contains(reason, errdefs.ErrPermissionDenied.Error()):
			cls = errdefs.ErrPermissionDenied
		case strings.Contains(reason, errdefs.ErrFailedPrecondition.Error()):
			cls = errdefs.ErrFailedPrecondition
		}
		return fmt.Errorf("guest refused stream %s: %s: %w", strings.TrimSpace(h.String()), reason, cls)
	}
	return fmt.Errorf("stream handshake: unexpected answer %q", line)
}

func readLine(conn net.Conn) (string, error) {
	var b [1]byte
	var sb strings.Builder
	for sb.Len() < api.MaxStreamHeader {
		if _, err := conn.Read(b[:]); err != nil {
			return "", err
		}
		if b[0] == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(b[0])
	}
	return "", errors.New("answer line too long")
}

// Close closes the ttrpc connection. Streams stay open until their owners
// close them.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.ttrpc.Close()
		c.conn.Close()
	})
	return err
}

// DecodeEvent unpacks an event from the guest's Events stream into the
// containerd event type it carries (e.g. *events.TaskExit).
func DecodeEvent(e *api.Event) (any, error) {
	if e.GetEvent() == nil {
		return nil, fmt.Errorf("event %d (%s) carries no payload: %w", e.GetSeq(), e.GetTopic(), errdefs.ErrInvalidArgument)
	}
	v, err := typeurl.UnmarshalAny(e.GetEvent())
	if err != nil {
		return nil, fmt.Errorf("event %d (%s): %w", e.GetSeq(), e.GetTopic(), err)
	}
	return v, nil
}
