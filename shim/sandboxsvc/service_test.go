package sandboxsvc

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	sandboxAPI "github.com/containerd/containerd/api/runtime/sandbox/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runtimeopts "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	criapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/sandbox/sandboxtest"
	"github.com/coco-runtime/coco/shim/options"
	"github.com/coco-runtime/coco/shim/pod"
	"github.com/coco-runtime/coco/shim/task"
)

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, any) error { return nil }

type fakeShutdown struct {
	once sync.Once
	done chan struct{}
}

func (f *fakeShutdown) Shutdown()                                    { f.once.Do(func() { close(f.done) }) }
func (f *fakeShutdown) RegisterCallback(func(context.Context) error) {}
func (f *fakeShutdown) Done() <-chan struct{}                        { return f.done }
func (f *fakeShutdown) Err() error                                   { return nil }

// The sandboxer = "shim" flow as containerd's shim sandbox controller drives
// it, with a CRI workload created through the task API in between.
func TestSandboxAPIFlow(t *testing.T) {
	dir := t.TempDir()
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	factory := &sandboxtest.Factory{PID: os.Getpid()}
	env := map[string]string{pod.RunDirEnv: filepath.Join(dir, "run")}
	p := pod.New(ctx, "k8s.io", pod.Deps{
		Factory:    factory.New,
		LoadConfig: func(path string) (*configs.Config, error) { return &configs.Config{Path: path}, nil },
		Getenv:     func(k string) string { return env[k] },
	}, nopPublisher{})
	sd := &fakeShutdown{done: make(chan struct{})}
	svc := New(p, sd)
	tasks := task.New(p, sd)

	// `start` saved the handler's runtime options in the sandbox bundle.
	bundle := filepath.Join(dir, "sandbox")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	ro, _ := anypb.New(&runtimeopts.Options{ConfigPath: "/etc/coco/configuration-qemu-snp.toml"})
	if err := options.Save(bundle, ro); err != nil {
		t.Fatal(err)
	}
	const id = "b3a1"
	if _, err := svc.StartSandbox(ctx, &sandboxAPI.StartSandboxRequest{SandboxID: id}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Fatalf("StartSandbox before Create: %v, want NotFound", err)
	}
	pc, _ := anypb.New(&criapi.PodSandboxConfig{Hostname: "web", Annotations: map[string]string{"io.katacontainers.config.hypervisor.cc_init_data": "H4sI"}})
	if _, err := svc.CreateSandbox(ctx, &sandboxAPI.CreateSandboxRequest{
		SandboxID: id, BundlePath: bundle, Options: pc, NetnsPath: "/var/run/netns/cni-1",
		Annotations: map[string]string{"extra": "1"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateSandbox(ctx, &sandboxAPI.CreateSandboxRequest{SandboxID: id, BundlePath: bundle}); !errdefs.IsAlreadyExists(errgrpc.ToNative(err)) {
		t.Fatalf("CreateSandbox twice: %v, want AlreadyExists", err)
	}
	fake := factory.Sandboxes()[0]
	if o := fake.Opts; o.ID != id || o.NetNSPath != "/var/run/netns/cni-1" || o.Spec.Hostname != "web" ||
		o.Annotations["io.katacontainers.config.hypervisor.cc_init_data"] != "H4sI" || o.Annotations["extra"] != "1" ||
		o.Config.Path != "/etc/coco/configuration-qemu-snp.toml" {
		t.Fatalf("sandbox options not passed through: %+v (config %+v)", o, o.Config)
	}
	if st, _ := svc.SandboxStatus(ctx, &sandboxAPI.SandboxStatusRequest{SandboxID: id}); st.State != stateNotReady {
		t.Fatalf("status before start: %s", st.State)
	}
	sr, err := svc.StartSandbox(ctx, &sandboxAPI.StartSandboxRequest{SandboxID: id})
	if err != nil || sr.Pid != uint32(os.Getpid()) {
		t.Fatalf("StartSandbox = %v, %v; want the VMM pid", sr, err)
	}
	if _, err := svc.PingSandbox(ctx, &sandboxAPI.PingRequest{SandboxID: id}); err != nil {
		t.Fatal(err)
	}
	st, err := svc.SandboxStatus(ctx, &sandboxAPI.SandboxStatusRequest{SandboxID: id, Verbose: true})
	if err != nil || st.State != stateReady || st.Info["accel"] != "fake" {
		t.Fatalf("SandboxStatus = %+v, %v", st, err)
	}
	pl, err := svc.Platform(ctx, &sandboxAPI.PlatformRequest{SandboxID: id})
	if err != nil || pl.Platform.OS != "linux" {
		t.Fatalf("Platform = %v, %v", pl, err)
	}
	if _, err := svc.SandboxMetrics(ctx, &sandboxAPI.SandboxMetricsRequest{SandboxID: id}); !errdefs.IsNotImplemented(errgrpc.ToNative(err)) {
		t.Fatalf("SandboxMetrics: %v", err)
	}

	// A CRI workload joins the pod through the task API; its last Shutdown
	// must not end a shim the sandbox API owns.
	wb := filepath.Join(dir, "app")
	os.MkdirAll(wb, 0o755)
	data, _ := json.Marshal(specs.Spec{Process: &specs.Process{Args: []string{"exit", "0"}}, Annotations: map[string]string{
		options.ContainerTypeAnnotation: options.ContainerTypeContainer, options.SandboxIDAnnotation: id}})
	os.WriteFile(filepath.Join(wb, "config.json"), data, 0o644)
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: wb}); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	tasks.Shutdown(ctx, &taskAPI.ShutdownRequest{})
	select {
	case <-sd.done:
		t.Fatal("task Shutdown ended a shim owned by the sandbox API")
	default:
	}

	waited := make(chan *sandboxAPI.WaitSandboxResponse, 1)
	go func() {
		wr, err := svc.WaitSandbox(ctx, &sandboxAPI.WaitSandboxRequest{SandboxID: id})
		if err != nil {
			t.Error(err)
		}
		waited <- wr
	}()
	if _, err := svc.StopSandbox(ctx, &sandboxAPI.StopSandboxRequest{SandboxID: id, TimeoutSecs: 5}); err != nil {
		t.Fatal(err)
	}
	select {
	case wr := <-waited:
		if wr == nil || wr.ExitedAt == nil {
			t.Fatalf("WaitSandbox = %v", wr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitSandbox did not return after StopSandbox")
	}
	if st, _ := svc.SandboxStatus(ctx, &sandboxAPI.SandboxStatusRequest{SandboxID: id}); st.State != stateNotReady || st.ExitedAt == nil {
		t.Fatalf("status after stop: %+v", st)
	}
	if _, err := svc.PingSandbox(ctx, &sandboxAPI.PingRequest{SandboxID: id}); err == nil {
		t.Fatal("Ping succeeded on a stopped sandbox")
	}
	if _, err := svc.ShutdownSandbox(ctx, &sandboxAPI.ShutdownSandboxRequest{SandboxID: id}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sd.done:
		t.Fatal("the shim began exiting before ShutdownSandbox's answer could be sent")
	default:
	}
	select {
	case <-sd.done:
	case <-time.After(5 * time.Second):
		t.Fatal("ShutdownSandbox did not end the shim")
	}
}

func TestCreateSandboxRejectsBadInput(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	factory := &sandboxtest.Factory{}
	p := pod.New(ctx, "k8s.io", pod.Deps{
		Factory:    factory.New,
		LoadConfig: func(path string) (*configs.Config, error) { return &configs.Config{}, nil },
		Getenv:     func(string) string { return "" },
	}, nopPublisher{})
	svc := New(p, &fakeShutdown{done: make(chan struct{})})
	for name, r := range map[string]*sandboxAPI.CreateSandboxRequest{
		"bad id":      {SandboxID: "../etc", BundlePath: t.TempDir()},
		"bad options": {SandboxID: "ok", BundlePath: t.TempDir(), Options: &anypb.Any{TypeUrl: "x/y", Value: []byte{1}}},
	} {
		if _, err := svc.CreateSandbox(ctx, r); !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) {
			t.Fatalf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if len(factory.Sandboxes()) != 0 {
		t.Fatal("a sandbox was created from bad input")
	}
}
