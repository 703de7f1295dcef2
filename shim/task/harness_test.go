package task

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/sandbox/sandboxtest"
	"github.com/coco-runtime/coco/shim/options"
	"github.com/coco-runtime/coco/shim/pod"
)

const testNS = "testns"

// recorder is a publisher that keeps every event in order. delay, when
// set, is how long each delivery takes (a containerd under load).
type recorder struct {
	delay  time.Duration
	mu     sync.Mutex
	topics []string
	events []any
}

func (r *recorder) Publish(ctx context.Context, topic string, ev any) error {
	if _, err := namespaces.NamespaceRequired(ctx); err != nil {
		return err
	}
	if r.delay > 0 {
		time.Sleep(r.delay)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, topic)
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) snapshot() ([]string, []any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.topics...), append([]any(nil), r.events...)
}

// waitTopics waits until the recorded topics (in order) equal want.
func (r *recorder) waitTopics(t *testing.T, want ...string) []any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, evs := r.snapshot()
		if strings.Join(got, " ") == strings.Join(want, " ") {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("events:\n got  %v\n want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeShutdown records Shutdown.
type fakeShutdown struct {
	mu   sync.Mutex
	done chan struct{}
	once sync.Once
}

func newFakeShutdown() *fakeShutdown { return &fakeShutdown{done: make(chan struct{})} }

func (f *fakeShutdown) Shutdown()                                    { f.once.Do(func() { close(f.done) }) }
func (f *fakeShutdown) RegisterCallback(func(context.Context) error) {}
func (f *fakeShutdown) Done() <-chan struct{}                        { return f.done }
func (f *fakeShutdown) Err() error                                   { return nil }
func (f *fakeShutdown) called() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

type harness struct {
	t       *testing.T
	ctx     context.Context
	dir     string
	runDir  string
	env     map[string]string
	factory *sandboxtest.Factory
	pub     *recorder
	sd      *fakeShutdown
	pod     *pod.Pod
	svc     *Service
	loaded  []string // config paths handed to LoadConfig
	mu      sync.Mutex
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessCtx(t, context.Background())
}

// newHarnessCtx is newHarness with a parent context (e.g. one carrying a
// logger the test reads).
func newHarnessCtx(t *testing.T, parent context.Context) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{
		t:      t,
		ctx:    namespaces.WithNamespace(parent, testNS),
		dir:    dir,
		runDir: filepath.Join(dir, "run"),
		pub:    &recorder{},
		sd:     newFakeShutdown(),
	}
	h.env = map[string]string{pod.RunDirEnv: h.runDir}
	// The VMM "pid" is a real, harmless child, so that OOM score changes
	// land on it and not on the test process.
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	h.factory = &sandboxtest.Factory{PID: sleeper.Process.Pid}
	deps := pod.Deps{
		Factory: h.factory.New,
		LoadConfig: func(path string) (*configs.Config, error) {
			h.mu.Lock()
			h.loaded = append(h.loaded, path)
			h.mu.Unlock()
			return &configs.Config{Path: path}, nil
		},
		Getenv: func(k string) string { return h.env[k] },
	}
	h.pod = pod.New(h.ctx, testNS, deps, h.pub)
	h.svc = New(h.pod, h.sd)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.pod.Stop(ctx)
	})
	return h
}

// bundle writes a bundle whose config.json has the given annotations and args.
func (h *harness) bundle(id string, annotations map[string]string, args ...string) string {
	h.t.Helper()
	b := filepath.Join(h.dir, "bundles", id)
	if err := os.MkdirAll(b, 0o755); err != nil {
		h.t.Fatal(err)
	}
	sp := specs.Spec{Version: specs.Version, Process: &specs.Process{Args: args}, Annotations: annotations}
	data, err := json.Marshal(sp)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b, "config.json"), data, 0o644); err != nil {
		h.t.Fatal(err)
	}
	return b
}

func sandboxAnnotations(id string) map[string]string {
	return map[string]string{options.ContainerTypeAnnotation: options.ContainerTypeSandbox, options.SandboxIDAnnotation: id}
}

func containerAnnotations(sandboxID string) map[string]string {
	return map[string]string{options.ContainerTypeAnnotation: options.ContainerTypeContainer, options.SandboxIDAnnotation: sandboxID}
}

// bootPod creates and starts the pod's sandbox container.
func (h *harness) bootPod(id string) {
	h.t.Helper()
	b := h.bundle(id, sandboxAnnotations(id), "pause")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: b}); err != nil {
		h.t.Fatalf("create sandbox container: %v", err)
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		h.t.Fatalf("start sandbox container: %v", err)
	}
}

// logFile returns a file:// stdout URI and its path.
func (h *harness) logFile(name string) (string, string) {
	p := filepath.Join(h.dir, "logs", name)
	return "file://" + p, p
}

func (h *harness) fake() *sandboxtest.Sandbox {
	h.t.Helper()
	sbs := h.factory.Sandboxes()
	if len(sbs) != 1 {
		h.t.Fatalf("want 1 sandbox, have %d", len(sbs))
	}
	return sbs[0]
}

// wantCode checks that err (already converted back from gRPC, as
// containerd does) carries errdefs class is.
func wantCode(t *testing.T, what string, err error, is func(error) bool, class string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %s", what, class)
	}
	if !is(err) {
		t.Fatalf("%s: error %q is not %s", what, err, class)
	}
}

var (
	isNotFound     = errdefs.IsNotFound
	isExists       = errdefs.IsAlreadyExists
	isPrecondition = errdefs.IsFailedPrecondition
)

func exitOf(t *testing.T, ev any) *eventstypes.TaskExit {
	t.Helper()
	e, ok := ev.(*eventstypes.TaskExit)
	if !ok {
		t.Fatalf("event %T is not a TaskExit", ev)
	}
	return e
}

func errgrpcToNative(err error) error { return errgrpc.ToNative(err) }
