// Package portforward serves the guest end of `kubectl port-forward`: each
// connection the host opens on vsock port api.PortForwardPort names one TCP
// port in a short header; once the policy allows it, the agent connects to
// that port on the guest's own loopback (the pod's network namespace: every
// container shares the VM's) and splices the two connections.
//
// The host is not trusted: it names a port, never an address, so it reaches
// nothing but what the guest serves on loopback-visible ports; the header
// is bounded in size and time; the number of live forwards is bounded.
package portforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Defaults of Config's limits.
const (
	DefaultMaxConns      = 64
	DefaultHeaderTimeout = 5 * time.Second
	DefaultDialTimeout   = 5 * time.Second
)

// CheckFunc asks the gate whether the host may forward to port; the error
// (errdefs-classed) is sent back as the refusal's reason.
type CheckFunc func(ctx context.Context, port uint16) error

// DialFunc connects to address ("127.0.0.1:80", "[::1]:80") on network
// ("tcp4", "tcp6").
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config configures a Server.
type Config struct {
	// Check judges each request; nil refuses every one.
	Check CheckFunc
	// Reserved are loopback ports of the guest's own services (port → what
	// it is), refused whatever the policy says: the workload API on
	// 127.0.0.1:8006 hands out the pod's secrets, and a host that reached it
	// would have them.
	Reserved map[uint16]string
	// Dial connects to the guest's loopback; nil: a net.Dialer.
	Dial DialFunc
	// MaxConns bounds live forwards, handshakes included (0: default).
	MaxConns int
	// HeaderTimeout bounds the wait for the header (0: default).
	HeaderTimeout time.Duration
	// DialTimeout bounds the check and the dial together (0: default).
	DialTimeout time.Duration
}

// Server accepts port-forward connections.
//
// Lifecycle: New → Serve (until the listener closes) → Close ends the
// forwards still open.
type Server struct {
	cfg   Config
	slots chan struct{}

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// New returns a Server with cfg's zero limits replaced by the defaults.
func New(cfg Config) *Server {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	return &Server{cfg: cfg, slots: make(chan struct{}, cfg.MaxConns), conns: map[net.Conn]struct{}{}}
}

// Serve handles connections from l until it fails (closed).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go s.handle(ctx, conn)
	}
}

// Close ends every forward still open; later connections are refused.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// refuse answers ERR with the reason (one line, bounded) and closes.
func refuse(ctx context.Context, conn net.Conn, err error) {
	reason := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(reason) > 400 {
		reason = reason[:400]
	}
	log.G(ctx).WithError(err).Info("port-forward refused")
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(conn, "ERR "+reason+"\n")
	conn.Close()
}

func (s *Server) handle(ctx context.Context, host net.Conn) {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		refuse(ctx, host, fmt.Errorf("more than %d port-forward connections at once: %w", s.cfg.MaxConns, errdefs.ErrResourceExhausted))
		return
	}
	if !s.track(host) {
		host.Close()
		return
	}
	defer s.untrack(host)
	host.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	line, err := readHeader(host)
	if err != nil {
		refuse(ctx, host, err)
		return
	}
	h, err := api.ParsePortForwardHeader(line)
	if err != nil {
		refuse(ctx, host, err)
		return
	}
	host.SetReadDeadline(time.Time{})
	local, err := s.connect(ctx, h.Port)
	if err != nil {
		refuse(ctx, host, err)
		return
	}
	if !s.track(local) {
		local.Close()
		return
	}
	defer s.untrack(local)
	if _, err := io.WriteString(host, "OK\n"); err != nil {
		return
	}
	api.Splice(host, local)
}

// connect asks the policy, then dials the port on 127.0.0.1, then on ::1
// (a server may listen on one family only). The address is ours: only the
// port comes from the host.
func (s *Server) connect(ctx context.Context, port uint16) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	if s.cfg.Check == nil {
		return nil, fmt.Errorf("port-forward is not served by this guest: %w", errdefs.ErrNotImplemented)
	}
	if what, ok := s.cfg.Reserved[port]; ok {
		return nil, fmt.Errorf("guest port %d is %s, which is never forwarded to the host: %w", port, what, errdefs.ErrPermissionDenied)
	}
	if err := s.cfg.Check(ctx, port); err != nil {
		return nil, err
	}
	p := strconv.Itoa(int(port))
	c, err4 := s.cfg.Dial(ctx, "tcp4", net.JoinHostPort("127.0.0.1", p))
	if err4 == nil {
		return c, nil
	}
	c, err6 := s.cfg.Dial(ctx, "tcp6", net.JoinHostPort("::1", p))
	if err6 == nil {
		return c, nil
	}
	return nil, fmt.Errorf("nothing to connect to on guest port %d (127.0.0.1: %v; ::1: %v): %w", port, err4, err6, errdefs.ErrNotFound)
}

// readHeader reads one line byte by byte (no stream data is consumed),
// at most api.MaxPortForwardHeader bytes with its newline.
func readHeader(conn net.Conn) (string, error) {
	var b [1]byte
	var sb strings.Builder
	for sb.Len() < api.MaxPortForwardHeader {
		if _, err := conn.Read(b[:]); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return "", fmt.Errorf("port-forward header: none within the time allowed: %w", errdefs.ErrInvalidArgument)
			}
			return "", fmt.Errorf("port-forward header: %w", err)
		}
		if b[0] == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(b[0])
	}
	return "", fmt.Errorf("port-forward header longer than %d bytes: %w", api.MaxPortForwardHeader, errdefs.ErrInvalidArgument)
}
