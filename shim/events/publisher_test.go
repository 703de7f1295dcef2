package events

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/emptypb"
)

// flaky is containerd's events service failing the first `fail` calls.
type flaky struct {
	mu   sync.Mutex
	fail int
	got  []string
}

func (f *flaky) Forward(ctx context.Context, r *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return nil, errors.New("containerd busy")
	}
	v, err := typeurl.UnmarshalAny(r.GetEnvelope().GetEvent())
	if err != nil {
		return nil, err
	}
	f.got = append(f.got, r.GetEnvelope().GetNamespace()+" "+r.GetEnvelope().GetTopic()+" "+v.(*eventstypes.TaskExit).ID)
	return &emptypb.Empty{}, nil
}

func serve(t *testing.T, svc eventsapi.TTRPCEventsService) string {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "c.ttrpc")
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := ttrpc.NewServer()
	eventsapi.RegisterTTRPCEventsService(srv, svc)
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	return addr
}

// A failed delivery is retried in place: later events never overtake it
// and nothing is delivered twice.
func TestPublishInOrderThroughFailures(t *testing.T) {
	f := &flaky{fail: 2}
	p, err := NewTTRPCPublisher(serve(t, f))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := namespaces.WithNamespace(context.Background(), "ns")
	for _, id := range []string{"exec1", "exec2", "init"} {
		if err := p.Publish(ctx, "/tasks/exit", &eventstypes.TaskExit{ContainerID: "c", ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"ns /tasks/exit exec1", "ns /tasks/exit exec2", "ns /tasks/exit init"}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.got) != len(want) {
		t.Fatalf("delivered %v, want %v", f.got, want)
	}
	for i := range want {
		if f.got[i] != want[i] {
			t.Fatalf("delivered %v, want %v", f.got, want)
		}
	}
}

func TestPublishGivesUpWithTheContext(t *testing.T) {
	p, err := NewTTRPCPublisher(serve(t, &flaky{fail: 1 << 30}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "ns"), 300*time.Millisecond)
	defer cancel()
	if err := p.Publish(ctx, "/tasks/exit", &eventstypes.TaskExit{}); err == nil {
		t.Fatal("Publish reported success to a service that never accepted")
	}
	if err := p.Publish(context.Background(), "/tasks/exit", &eventstypes.TaskExit{}); err == nil {
		t.Fatal("Publish without a namespace succeeded")
	}
	if _, err := NewTTRPCPublisher(""); err == nil {
		t.Fatal("empty TTRPC_ADDRESS accepted")
	}
}

// containerd restarting: the connection breaks, the publisher reconnects to
// the new containerd at the same address and delivers.
func TestPublishReconnects(t *testing.T) {
	addr := filepath.Join(t.TempDir(), "c.ttrpc")
	start := func(f *flaky) (*ttrpc.Server, *trackedListener) {
		l, err := net.Listen("unix", addr)
		if err != nil {
			t.Fatal(err)
		}
		tl := &trackedListener{Listener: l}
		srv, _ := ttrpc.NewServer()
		eventsapi.RegisterTTRPCEventsService(srv, f)
		go srv.Serve(context.Background(), tl)
		return srv, tl
	}
	first, second := &flaky{}, &flaky{}
	srv, conns := start(first)
	p, err := NewTTRPCPublisher(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := namespaces.WithNamespace(context.Background(), "ns")
	if err := p.Publish(ctx, "/tasks/exit", &eventstypes.TaskExit{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	// ttrpc's Close ends its connections asynchronously; a dead containerd
	// has none left, so end them here before the next publish.
	srv.Close()
	conns.closeAll()
	srv2, _ := start(second)
	defer srv2.Close()
	if err := p.Publish(ctx, "/tasks/exit", &eventstypes.TaskExit{ID: "b"}); err != nil {
		t.Fatalf("publish after containerd restarted: %v", err)
	}
	second.mu.Lock()
	defer second.mu.Unlock()
	if len(second.got) != 1 || second.got[0] != "ns /tasks/exit b" {
		t.Fatalf("new containerd got %v", second.got)
	}
}

// trackedListener remembers the connections it accepted, so a test can end
// them at once.
type trackedListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackedListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}
