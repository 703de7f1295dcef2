package manager_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	sandboxAPI "github.com/containerd/containerd/api/runtime/sandbox/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	runtimeopts "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/sandbox/sandboxtest"
	"github.com/coco-runtime/coco/shim/options"
	"github.com/coco-runtime/coco/shim/pod"
)

const ns = "protons"

// eventSink is a stub of containerd's ttrpc events service.
type eventSink struct {
	mu   sync.Mutex
	evs  []string // "topic container/id"
	bad  []string
	seen chan struct{}
}

func (s *eventSink) Forward(ctx context.Context, r *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	env := r.GetEnvelope()
	v, err := typeurl.UnmarshalAny(env.GetEvent())
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || env.GetNamespace() != ns {
		s.bad = append(s.bad, fmt.Sprintf("%s ns=%q err=%v", env.GetTopic(), env.GetNamespace(), err))
	}
	s.evs = append(s.evs, env.GetTopic()+" "+describe(v))
	select {
	case s.seen <- struct{}{}:
	default:
	}
	return &emptypb.Empty{}, nil
}

func describe(v any) string {
	switch e := v.(type) {
	case *eventstypes.TaskCreate:
		return e.ContainerID
	case *eventstypes.TaskStart:
		return e.ContainerID
	case *eventstypes.TaskExit:
		return e.ContainerID + "/" + e.ID
	case *eventstypes.TaskDelete:
		return e.ContainerID
	case *eventstypes.TaskExecAdded:
		return e.ContainerID + "/" + e.ExecID
	case *eventstypes.TaskExecStarted:
		return e.ContainerID + "/" + e.ExecID
	}
	return fmt.Sprintf("%T", v)
}

func (s *eventSink) wait(t *testing.T, want []string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		got := append([]string(nil), s.evs...)
		bad := append([]string(nil), s.bad...)
		s.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("malformed events: %v", bad)
		}
		if strings.Join(got, "\n") == strings.Join(want, "\n") {
			return
		}
		select {
		case <-s.seen:
		case <-deadline:
			t.Fatalf("events in containerd's order:\n got:\n  %s\n want:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
}

type env struct {
	t       *testing.T
	bin     string
	root    string // short: unix socket paths are limited to 106 bytes
	ttrpc   string
	grpc    string
	runDir  string
	sockDir string
	sink    *ttrpc.Server
}

// stopSink makes containerd's events service disappear.
func (e *env) stopSink() { e.sink.Close() }

func setup(t *testing.T) (*env, *eventSink) {
	if testing.Short() {
		t.Skip("builds the shim binary")
	}
	root, err := os.MkdirTemp("/tmp", "cocop")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	e := &env{t: t, root: root, ttrpc: filepath.Join(root, "c.ttrpc"), grpc: filepath.Join(root, "c.sock"),
		runDir: filepath.Join(root, "run"), sockDir: filepath.Join(root, "s")}
	e.bin = filepath.Join(root, "containerd-shim-coco-v2")
	// A failed test may leave shims of this binary running: stop them.
	t.Cleanup(func() {
		out, _ := exec.Command("pgrep", "-f", e.bin).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	build := exec.Command("go", "build", "-o", e.bin, "github.com/coco-runtime/coco/shim/internal/testshim")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build test shim: %v\n%s", err, out)
	}
	sink := &eventSink{seen: make(chan struct{}, 1)}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	eventsapi.RegisterTTRPCEventsService(srv, sink)
	l, err := net.Listen("unix", e.ttrpc)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	e.sink = srv
	t.Cleanup(func() { srv.Close() })
	return e, sink
}

// bundle writes a bundle with a config.json and the shim log FIFO, which
// containerd creates and reads before it runs `start`.
func (e *env) bundle(id string, annotations map[string]string, args ...string) string {
	e.t.Helper()
	b := filepath.Join(e.root, "b", id)
	if err := os.MkdirAll(b, 0o755); err != nil {
		e.t.Fatal(err)
	}
	data, _ := json.Marshal(specs.Spec{Version: specs.Version, Process: &specs.Process{Args: args}, Annotations: annotations})
	if err := os.WriteFile(filepath.Join(b, "config.json"), data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	logFifo := filepath.Join(b, "log")
	if err := unix.Mkfifo(logFifo, 0o600); err != nil {
		e.t.Fatal(err)
	}
	f, err := os.OpenFile(logFifo, os.O_RDWR, 0) // RDWR: never blocks, never EOFs
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { f.Close() })
	logs := &lockedBuffer{}
	go io.Copy(logs, f)
	e.t.Cleanup(func() {
		if e.t.Failed() {
			e.t.Logf("shim log of %s:\n%s", id, logs.String())
		}
	})
	return b
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (e *env) cmd(bundle, id string, args ...string) *exec.Cmd {
	base := []string{"-namespace", ns, "-address", e.grpc, "-publish-binary", "/bin/true", "-id", id}
	c := exec.Command(e.bin, append(base, args...)...)
	c.Dir = bundle
	c.Env = append(os.Environ(), "TTRPC_ADDRESS="+e.ttrpc, "GRPC_ADDRESS="+e.grpc, "NAMESPACE="+ns,
		"MAX_SHIM_VERSION=2", pod.RunDirEnv+"="+e.runDir)
	return c
}

// start runs `start` the way containerd ≥ 2.3 does and returns the address.
func (e *env) start(bundle, id string, opts *anypb.Any) string {
	e.t.Helper()
	params := &bootapi.BootstrapParams{
		InstanceID: id, Namespace: ns, LogLevel: bootapi.LogLevel_LOG_LEVEL_INFO,
		ContainerdTtrpcAddress: e.ttrpc, ContainerdGrpcAddress: e.grpc, ContainerdBinary: "/bin/true",
		SocketDir: &e.sockDir,
	}
	if opts != nil {
		if err := params.AddExtension(opts); err != nil {
			e.t.Fatal(err)
		}
	}
	in, _ := proto.Marshal(params)
	c := e.cmd(bundle, id, "start")
	c.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		e.t.Fatalf("start %s: %v: %s", id, err, stderr.String())
	}
	var res bootapi.BootstrapResult
	if err := proto.Unmarshal(out, &res); err != nil {
		e.t.Fatalf("start %s printed %q, not a BootstrapResult: %v", id, out, err)
	}
	if res.Version != 3 || res.Protocol != "ttrpc" || !strings.HasPrefix(res.Address, "unix://"+e.sockDir+"/") {
		e.t.Fatalf("start %s: %+v", id, &res)
	}
	return res.Address
}

func connect(t *testing.T, address string) (*ttrpc.Client, context.Context) {
	t.Helper()
	conn, err := net.Dial("unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return c, namespaces.WithNamespace(context.Background(), ns)
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			// The shim library dumps its goroutines to the shim log on SIGUSR1.
			syscall.Kill(pid, syscall.SIGUSR1)
			time.Sleep(500 * time.Millisecond)
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("shim %d still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func cri(typ, sandboxID string) map[string]string {
	return map[string]string{options.ContainerTypeAnnotation: typ, options.SandboxIDAnnotation: sandboxID}
}

// TestProtocol runs the built shim the way containerd does in podsandbox
// mode: `start` with BootstrapParams on stdin for the sandbox and for a
// workload (which must re-use the pod's shim), task calls over the printed
// ttrpc address, Shutdown, and the events containerd receives, in order.
func TestProtocol(t *testing.T) {
	e, sink := setup(t)
	const pod1 = "pod1"
	sb := e.bundle(pod1, cri("sandbox", pod1), "pause")
	app := e.bundle("app", cri("container", pod1), "echo", "hi")
	ro, _ := anypb.New(&runtimeopts.Options{ConfigPath: "/etc/coco/configuration-test.toml"})

	addr := e.start(sb, pod1, ro)
	if again := e.start(app, "app", ro); again != addr {
		t.Fatalf("workload got shim %s, pod's shim is %s", again, addr)
	}
	client, ctx := connect(t, addr)
	tasks := taskAPI.NewTTRPCTaskClient(client)

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: pod1, Bundle: sb})
	must("create sandbox", err)
	_, err = tasks.Start(ctx, &taskAPI.StartRequest{ID: pod1})
	must("start sandbox", err)
	cn, err := tasks.Connect(ctx, &taskAPI.ConnectRequest{ID: pod1})
	must("connect", err)
	logPath := filepath.Join(e.root, "app.log")
	_, err = tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: app, Stdout: "file://" + logPath, Stderr: "file://" + logPath})
	must("create app", err)
	_, err = tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: app})
	if !errdefs.IsAlreadyExists(errgrpc.ToNative(err)) {
		t.Fatalf("second Create over ttrpc: %v, want AlreadyExists", err)
	}
	_, err = tasks.Start(ctx, &taskAPI.StartRequest{ID: "app"})
	must("start app", err)
	wr, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "app"})
	must("wait app", err)
	if wr.ExitStatus != 0 {
		t.Fatalf("app exit %d", wr.ExitStatus)
	}
	_, err = tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "app"})
	must("delete app", err)
	if out, _ := os.ReadFile(logPath); string(out) != "hi\n" {
		t.Fatalf("app log %q", out)
	}
	// The sandbox API is served on the same socket.
	_, err = sandboxAPI.NewTTRPCSandboxClient(client).PingSandbox(ctx, &sandboxAPI.PingRequest{SandboxID: "other"})
	if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Fatalf("sandbox service on the shim socket: %v, want NotFound", err)
	}
	_, err = tasks.Kill(ctx, &taskAPI.KillRequest{ID: pod1, Signal: 9})
	must("kill sandbox", err)
	wr, err = tasks.Wait(ctx, &taskAPI.WaitRequest{ID: pod1})
	must("wait sandbox", err)
	if wr.ExitStatus != 137 {
		t.Fatalf("sandbox exit %d, want 137", wr.ExitStatus)
	}
	_, err = tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: pod1})
	must("delete sandbox", err)

	stateDir := pod.StateDir(e.runDir, pod1)
	if got, _ := os.ReadFile(filepath.Join(stateDir, sandboxtest.ConfigFile)); string(got) != "/etc/coco/configuration-test.toml" {
		t.Fatalf("the pod got configuration %q, want the runtime option's ConfigPath", got)
	}
	_, _ = tasks.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: pod1})
	waitGone(t, int(cn.ShimPid))
	if _, err := os.Stat(strings.TrimPrefix(addr, "unix://")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("shim socket left behind: %v", err)
	}
	sink.wait(t, []string{
		"/tasks/create " + pod1, "/tasks/start " + pod1,
		"/tasks/create app", "/tasks/start app", "/tasks/exit app/app", "/tasks/delete app",
		"/tasks/exit " + pod1 + "/" + pod1, "/tasks/delete " + pod1,
	})

	// `delete` (containerd's cleanup after the shim) removes the pod state.
	c := e.cmd(sb, pod1, "-bundle", sb, "delete")
	out, err := c.Output()
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	var dr taskAPI.DeleteResponse
	if err := proto.Unmarshal(out, &dr); err != nil || dr.ExitStatus != 137 || dr.ExitedAt == nil {
		t.Fatalf("delete printed %+v (%v)", &dr, err)
	}
	if _, err := os.Stat(stateDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("delete left the pod state: %v", err)
	}
}

// TestDeleteAfterShimCrash kills the shim under a running pod; `delete`
// must clean up from the on-disk state alone, and a new `start` must replace
// the dead shim's stale socket.
func TestDeleteAfterShimCrash(t *testing.T) {
	e, _ := setup(t)
	const id = "pod2"
	b := e.bundle(id, nil, "sleep")
	addr := e.start(b, id, nil)
	client, ctx := connect(t, addr)
	tasks := taskAPI.NewTTRPCTaskClient(client)
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: b}); err != nil {
		t.Fatal(err)
	}
	cn, err := tasks.Connect(ctx, &taskAPI.ConnectRequest{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	stateDir := pod.StateDir(e.runDir, id)
	if _, err := os.Stat(filepath.Join(stateDir, sandboxtest.MarkerFile)); err != nil {
		t.Fatalf("pod state missing while running: %v", err)
	}
	// A workload whose Create failed is deleted while the pod's shim lives:
	// the pod must survive.
	app := e.bundle("app2", cri("container", id), "sleep")
	res, _ := json.Marshal(map[string]any{"version": 3, "address": addr, "protocol": "ttrpc"})
	if err := os.WriteFile(filepath.Join(app, "bootstrap.json"), res, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := e.cmd(app, "app2", "-bundle", app, "delete").Output(); err != nil {
		t.Fatalf("delete of a workload: %v (%q)", err, out)
	}
	if _, err := os.Stat(filepath.Join(stateDir, sandboxtest.MarkerFile)); err != nil {
		t.Fatalf("deleting a workload destroyed the live pod: %v", err)
	}

	syscall.Kill(int(cn.ShimPid), syscall.SIGKILL)
	waitGone(t, int(cn.ShimPid))

	// Now the same workload's delete finds the pod's shim dead and cleans up.
	out, err := e.cmd(app, "app2", "-bundle", app, "delete").Output()
	if err != nil {
		t.Fatalf("delete after crash: %v", err)
	}
	var dr taskAPI.DeleteResponse
	if err := proto.Unmarshal(out, &dr); err != nil || dr.ExitStatus != 137 {
		t.Fatalf("delete printed %+v (%v)", &dr, err)
	}
	if _, err := os.Stat(stateDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("delete left the crashed pod's state: %v", err)
	}

	// The dead shim's socket file is still there; start must replace it.
	b2 := e.bundle(id+"-again", nil, "sleep")
	os.Remove(filepath.Join(b2, "config.json"))
	addr2 := e.start(b2, id, nil)
	if addr2 != addr {
		t.Fatalf("same pod id, different address: %s vs %s", addr2, addr)
	}
	client2, ctx2 := connect(t, addr2)
	cn2, err := taskAPI.NewTTRPCTaskClient(client2).Connect(ctx2, &taskAPI.ConnectRequest{})
	if err != nil || cn2.ShimPid == cn.ShimPid {
		t.Fatalf("no fresh shim behind the re-used address: %v, %v", cn2, err)
	}
	taskAPI.NewTTRPCTaskClient(client2).Shutdown(ctx2, &taskAPI.ShutdownRequest{})
	waitGone(t, int(cn2.ShimPid))
}

// TestVersionFlag checks the `--version` report of the real binary.
func TestVersionFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the shim binary")
	}
	bin := filepath.Join(t.TempDir(), "containerd-shim-coco-v2")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/coco-runtime/coco/shim/version.Version=v9.8.7",
		"-o", bin, "github.com/coco-runtime/coco/shim/cmd/containerd-shim-coco-v2")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"containerd-shim-coco-v2", "v9.8.7", "Revision", "go1."} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("--version output %q lacks %q", out, want)
		}
	}
}

// TestSIGTERMWithContainerdGone: containerd has died (its events service is
// gone) and the shim is told to stop. It must stop the pod and exit, not
// hang retrying events nobody will receive.
func TestSIGTERMWithContainerdGone(t *testing.T) {
	e, _ := setup(t)
	const id = "pod3"
	b := e.bundle(id, nil, "sleep")
	addr := e.start(b, id, nil)
	client, ctx := connect(t, addr)
	tasks := taskAPI.NewTTRPCTaskClient(client)
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	cn, err := tasks.Connect(ctx, &taskAPI.ConnectRequest{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(e.ttrpc) // containerd gone: nothing listens for events
	e.stopSink()
	syscall.Kill(int(cn.ShimPid), syscall.SIGTERM)
	waitGone(t, int(cn.ShimPid))
}
