package agent

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// bootingGuest refuses connections until ready, like a VM whose agent is
// not listening yet.
type bootingGuest struct {
	sock  string
	ready atomic.Bool
	dials atomic.Int32
}

func (g *bootingGuest) Dial(ctx context.Context, port uint32) (net.Conn, error) {
	g.dials.Add(1)
	if !g.ready.Load() {
		return nil, errors.New("connection refused")
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", g.sock)
}

// healthOnly answers Health; everything else is unimplemented.
type healthOnly struct{ api.AgentService }

func (healthOnly) Health(context.Context, *api.HealthRequest) (*api.HealthResponse, error) {
	// A guest whose kernel started an hour ago.
	return &api.HealthResponse{Version: "v-test", AgentReadyNs: 7, NowNs: uint64(time.Hour)}, nil
}

func serveHealth(t *testing.T) string {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	api.RegisterAgentService(srv, healthOnly{})
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestDialRetriesUntilHealthy(t *testing.T) {
	g := &bootingGuest{sock: serveHealth(t)}
	time.AfterFunc(150*time.Millisecond, func() { g.ready.Store(true) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if g.dials.Load() < 2 {
		t.Errorf("dialled %d times, want retries while the guest booted", g.dials.Load())
	}
	if h := c.Health(); h.GetVersion() != "v-test" || h.GetAgentReadyNs() != 7 {
		t.Errorf("health = %+v", h)
	}
	if z := time.Since(c.GuestClockZero()); z < time.Hour || z > time.Hour+5*time.Second {
		t.Errorf("guest clock zero %s ago, want an hour (the guest's clock read 1h during Health)", z)
	}
	// The guest's clock reading falls within the round trip the call began.
	if began, sent := c.HandshakeTimes(); began.IsZero() || sent.Before(began) || sent.After(c.GuestClockZero().Add(time.Hour)) {
		t.Errorf("handshake began %s, Health sent %s, guest read its clock %s: want that order", began, sent, c.GuestClockZero().Add(time.Hour))
	}
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	c.Close() // idempotent
}

func TestDialGivesUpAtDeadline(t *testing.T) {
	g := &bootingGuest{sock: "/nonexistent"}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, g)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1024") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("err = %v, want the port, the deadline and the last failure", err)
	}
}

func TestOpenStreamValidatesBeforeDialling(t *testing.T) {
	g := &bootingGuest{sock: serveHealth(t)}
	g.ready.Store(true)
	c, err := Dial(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := g.dials.Load()
	if _, err := c.OpenStream(context.Background(), "../x", "-", api.StreamStdout); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad id: %v", err)
	}
	if g.dials.Load() != before {
		t.Error("dialled the guest for an invalid stream")
	}
}
