package sandbox

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// createAgent is a guest for CreateTask: PrepareContainer waits (up to
// prepareWait) for the output streams to be open, so a host that dials them
// only after the bundle is ready shows as a slow prepare.
type createAgent struct {
	taskAPI.TTRPCTaskService
	prepareWait time.Duration
	prepareErr  error

	mu       sync.Mutex
	opened   map[string]net.Conn // kind → the guest's end
	streamed chan struct{}       // closed once stdout and stderr are open
	created  *taskAPI.CreateTaskRequest
	deleted  bool
}

func newCreateAgent() *createAgent {
	return &createAgent{opened: map[string]net.Conn{}, streamed: make(chan struct{}), prepareWait: 5 * time.Second}
}

func (a *createAgent) OpenStream(_ context.Context, _, _, kind string) (net.Conn, error) {
	host, guest := net.Pipe()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.opened[kind] = guest
	if a.opened["stdout"] != nil && a.opened["stderr"] != nil {
		close(a.streamed)
	}
	return host, nil
}

// prepareAPI is the agent API of a createAgent: PrepareContainer only.
type prepareAPI struct {
	api.AgentClient
	a *createAgent
}

func (p prepareAPI) PrepareContainer(ctx context.Context, r *api.PrepareContainerRequest) (*api.PrepareContainerResponse, error) {
	a := p.a
	select {
	case <-a.streamed:
	case <-time.After(a.prepareWait):
	}
	if a.prepareErr != nil {
		return nil, a.prepareErr
	}
	return &api.PrepareContainerResponse{Bundle: "/run/coco/bundles/" + r.ContainerId}, nil
}

func (a *createAgent) Create(_ context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.created = r
	return &taskAPI.CreateTaskResponse{Pid: 42}, nil
}

func (a *createAgent) Kill(context.Context, *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func (a *createAgent) Delete(context.Context, *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deleted = true
	return nil, errdefs.ErrNotFound
}

func (a *createAgent) Task() taskAPI.TTRPCTaskService         { return a }
func (a *createAgent) Agent() api.AgentClient                 { return prepareAPI{a: a} }
func (a *createAgent) Health() *api.HealthResponse            { return nil }
func (a *createAgent) GuestClockZero() time.Time              { return time.Time{} }
func (a *createAgent) HandshakeTimes() (time.Time, time.Time) { return time.Time{}, time.Time{} }
func (a *createAgent) Close() error                           { return nil }

// guestEnd is the guest's end of a stream, once the host opened it.
func (a *createAgent) guestEnd(kind string) net.Conn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.opened[kind]
}

func createSandbox(t *testing.T, a *createAgent) *vmSandbox {
	cfg := &configs.Config{}
	cfg.Rootfs.GuestPull = true // no rootfs disk: no VM needed
	return &vmSandbox{opts: Options{ID: "pod1", StateDir: t.TempDir(), Config: cfg}, agent: a, phases: phaseLog{dir: t.TempDir()}}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriter) Close() error                { return nil }

// The stdio streams are dialled while the guest prepares the bundle, not
// after it: PrepareContainer here answers as soon as both are open.
func TestCreateTaskDialsStdioDuringPrepare(t *testing.T) {
	a := newCreateAgent()
	s := createSandbox(t, a)
	start := time.Now()
	_, err := s.CreateTask(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1"},
		Container{Spec: []byte(`{}`), Parsed: &specs.Spec{}, Image: "busybox"}, IO{Stdout: nopWriter{}, Stderr: nopWriter{}})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= a.prepareWait {
		t.Fatalf("CreateTask took %s: PrepareContainer waited out its %s for the stdio streams", took, a.prepareWait)
	}
	if a.created == nil || a.created.Stdout != stdioPlaceholder || a.created.Stderr != stdioPlaceholder || a.created.Stdin != "" {
		t.Fatalf("task Create got %+v; want stdout and stderr on streams", a.created)
	}
	if got := s.phases.data.Containers; len(got) != 1 || got[0].StdioMs <= 0 {
		t.Errorf("phases %+v: want the stdio dials' time", got)
	}
}

// A create that fails before its task request closes the streams it had
// dialled, so the guest releases them.
func TestCreateTaskFailedPrepareClosesStreams(t *testing.T) {
	a := newCreateAgent()
	a.prepareErr = errors.New("policy: CreateContainerRequest denied")
	s := createSandbox(t, a)
	_, err := s.CreateTask(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1"},
		Container{Spec: []byte(`{}`), Parsed: &specs.Spec{}, Image: "busybox"}, IO{Stdout: nopWriter{}, Stderr: nopWriter{}})
	if err == nil || a.created != nil {
		t.Fatalf("err %v, task created %v; want the prepare's error and no task", err, a.created != nil)
	}
	for _, kind := range []string{"stdout", "stderr"} {
		g := a.guestEnd(kind)
		if g == nil {
			t.Fatalf("%s was never opened", kind)
		}
		g.SetReadDeadline(time.Now().Add(5 * time.Second))
		var b [1]byte
		if _, err := g.Read(b[:]); !errors.Is(err, net.ErrClosed) && err.Error() != "EOF" {
			t.Errorf("%s: guest read %v; want the host's end closed", kind, err)
		}
	}
}

// A process with stdin alone is dialled after PrepareContainer, as before:
// closing stdin early would read as EOF to the guest, not as "no process".
func TestCreateTaskStdinOnlyDialsAfterPrepare(t *testing.T) {
	a := newCreateAgent()
	a.prepareWait = 0
	a.prepareErr = errors.New("refused")
	s := createSandbox(t, a)
	stdinR, stdinW := net.Pipe()
	defer stdinW.Close()
	_, err := s.CreateTask(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1"},
		Container{Spec: []byte(`{}`), Parsed: &specs.Spec{}, Image: "busybox"}, IO{Stdin: stdinR})
	if err == nil {
		t.Fatal("no error from a refused prepare")
	}
	if g := a.guestEnd("stdin"); g != nil {
		t.Fatal("stdin dialled before PrepareContainer answered")
	}
}
