package service

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coco-runtime/coco/guest-assets/agent/container"
	"github.com/coco-runtime/coco/virtcontainers/agent"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// unixDialer maps guest vsock ports to unix sockets, standing in for a VM.
type unixDialer map[uint32]string

func (d unixDialer) Dial(ctx context.Context, port uint32) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "unix", d[port])
}

type fakeGuest struct {
	mu       sync.Mutex
	hostname string
	resolv   string
	sysctls  map[string]string
	clock    time.Time
}

func (g *fakeGuest) SetHostname(n string) error {
	g.mu.Lock()
	g.hostname = n
	g.mu.Unlock()
	return nil
}
func (g *fakeGuest) WriteResolvConf(c string) error {
	g.mu.Lock()
	g.resolv = c
	g.mu.Unlock()
	return nil
}
func (g *fakeGuest) SetSysctl(k, v string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sysctls == nil {
		g.sysctls = map[string]string{}
	}
	g.sysctls[k] = v
	return nil
}
func (g *fakeGuest) SetClock(t time.Time) error { g.mu.Lock(); g.clock = t; g.mu.Unlock(); return nil }

// denyKill is a policy that refuses Kill and reading exec "secret"'s output.
type denyKill struct{}

func (denyKill) Evaluate(_ context.Context, method string, req proto.Message) error {
	if method == "Kill" {
		return errors.New("rule agent_policy.KillRequest is false")
	}
	if r, ok := req.(*api.ReadStreamRequest); ok && method == "ReadStream" && r.GetExecId() == "secret" {
		return errors.New("rule agent_policy.ReadStreamRequest is false")
	}
	return nil
}

type harness struct {
	agent     *Agent
	client    *agent.Client
	guest     *fakeGuest
	destroyed chan string
	dir       string
}

func start(t *testing.T) *harness { return startB(t) }

func startB(t testing.TB) *harness { return startWith(t, nil) }

// startWith starts an agent whose Config mod may adjust first.
func startWith(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{guest: &fakeGuest{}, destroyed: make(chan string, 1), dir: dir}
	for _, d := range []string{"bundles", "io", "sysblock"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{
		Version: "test",
		StartNs: 1,
		Now:     func() uint64 { return 42 },
		Policy:  denyKill{},
		Guest:   h.guest,
		Containers: container.Config{
			BundleRoot: filepath.Join(dir, "bundles"),
			SysBlock:   filepath.Join(dir, "sysblock"),
			DeviceWait: 100 * time.Millisecond,
		},
		IODir:     filepath.Join(dir, "io"),
		OnDestroy: func(r string) { h.destroyed <- r },
	}
	if mod != nil {
		mod(&cfg)
	}
	var err error
	h.agent, err = New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := unixDialer{api.AgentPort: filepath.Join(dir, "agent.sock"), api.StreamPort: filepath.Join(dir, "stream.sock"),
		api.PortForwardPort: filepath.Join(dir, "forward.sock")}
	al, err := net.Listen("unix", d[api.AgentPort])
	if err != nil {
		t.Fatal(err)
	}
	sl, err := net.Listen("unix", d[api.StreamPort])
	if err != nil {
		t.Fatal(err)
	}
	fl, err := net.Listen("unix", d[api.PortForwardPort])
	if err != nil {
		t.Fatal(err)
	}
	go h.agent.Serve(ctx, al, sl)
	go h.agent.ServePortForward(ctx, fl)
	dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
	defer dcancel()
	h.client, err = agent.Dial(dctx, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.client.Close()
		sctx, c := context.WithTimeout(context.Background(), time.Second)
		h.agent.Close(sctx)
		c()
		sl.Close()
		fl.Close()
		cancel()
	})
	return h
}

func wantErr(t *testing.T, err error, is func(error) bool, words ...string) {
	t.Helper()
	if err == nil || !is(err) {
		t.Fatalf("err = %v, want another class", err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err %q does not name %q", err, w)
		}
	}
}

func TestRefusedBeforeSetup(t *testing.T) {
	h := start(t)
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	hr := h.client.Health()
	if hr.GetVersion() != "test" || hr.GetAgentReadyNs() != 42 || hr.GetSandboxReady() {
		t.Errorf("health = %+v", hr)
	}
	_, err := h.client.Task().Create(ctx, &task.CreateTaskRequest{ID: "c1", Bundle: "/b"})
	wantErr(t, err, errdefs.IsFailedPrecondition, "Create", "sandbox not set up")
	_, err = h.client.Agent().PrepareContainer(ctx, &api.PrepareContainerRequest{ContainerId: "c1"})
	wantErr(t, err, errdefs.IsFailedPrecondition, "PrepareContainer", "sandbox not set up")
	_, err = h.client.Agent().DestroySandbox(ctx, &api.DestroySandboxRequest{})
	wantErr(t, err, errdefs.IsFailedPrecondition, "DestroySandbox")
}

func TestSetupValidationAndPolicy(t *testing.T) {
	h := start(t)
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")

	// An Events stream opened first waits for the setup instead of failing.
	ectx, ecancel := context.WithCancel(ctx)
	defer ecancel()
	stream, err := h.client.Agent().Events(ectx, &api.EventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvd := make(chan error, 1)
	go func() { _, err := stream.Recv(); recvd <- err }()

	_, err = h.client.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{SandboxId: "../pod"})
	wantErr(t, err, errdefs.IsInvalidArgument, "SetupSandbox", "sandbox_id")
	_, err = h.client.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{SandboxId: "pod", Policy: "package agent_policy"})
	wantErr(t, err, errdefs.IsNotImplemented, "policy")

	now := time.Now()
	_, err = h.client.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{
		SandboxId: "pod", Hostname: "web-0", Dns: "nameserver 10.0.0.10\n",
		Sysctls: map[string]string{"kernel.shm_rmid_forced": "1"}, HostTime: timestamppb.New(now),
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.guest.hostname != "web-0" || h.guest.resolv != "nameserver 10.0.0.10\n" || h.guest.sysctls["kernel.shm_rmid_forced"] != "1" || !h.guest.clock.Equal(now) {
		t.Errorf("guest = %+v", h.guest)
	}
	_, err = h.client.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{SandboxId: "pod"})
	wantErr(t, err, errdefs.IsAlreadyExists, "already set up")
	select {
	case err := <-recvd:
		t.Fatalf("events stream ended after setup: %v", err)
	case <-time.After(50 * time.Millisecond):
	}

	// Malformed task requests, named by field.
	_, err = h.client.Task().Create(ctx, &task.CreateTaskRequest{ID: "c1", Bundle: "/x", Rootfs: []*types.Mount{{Type: "bind", Source: "/"}}})
	wantErr(t, err, errdefs.IsInvalidArgument, "Create", "rootfs")
	_, err = h.client.Task().Create(ctx, &task.CreateTaskRequest{ID: "c/1", Bundle: "/x"})
	wantErr(t, err, errdefs.IsInvalidArgument, "id")
	_, err = h.client.Task().Create(ctx, &task.CreateTaskRequest{ID: "c1", Bundle: "/x"})
	wantErr(t, err, errdefs.IsFailedPrecondition, "PrepareContainer")
	_, err = h.client.Task().Kill(ctx, &task.KillRequest{ID: "c1", Signal: 0})
	wantErr(t, err, errdefs.IsInvalidArgument, "signal")
	_, err = h.client.Task().Exec(ctx, &task.ExecProcessRequest{ID: "c1", ExecID: "e1"})
	wantErr(t, err, errdefs.IsInvalidArgument, "Exec", "spec")

	// The policy's denial names the request and keeps its reason.
	_, err = h.client.Task().Kill(ctx, &task.KillRequest{ID: "c1", Signal: 9})
	wantErr(t, err, errdefs.IsPermissionDenied, "Kill denied by agent policy", "agent_policy.KillRequest")

	// The containerd namespace becomes a path: only plain names pass.
	_, err = h.client.Task().State(namespaces.WithNamespace(context.Background(), "../../etc"), &task.StateRequest{ID: "c1"})
	wantErr(t, err, errdefs.IsInvalidArgument, "namespace")

	// Unknown containers are NotFound from containerd's own task service.
	_, err = h.client.Task().State(ctx, &task.StateRequest{ID: "c1"})
	wantErr(t, err, errdefs.IsNotFound)
}

func TestPrepareContainerMissingDiskLeavesNothing(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	if _, err := h.client.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	spec := `{"process":{"args":["true"],"cwd":"/"},"linux":{"namespaces":[{"type":"mount"}]}}`
	_, err := h.client.Agent().PrepareContainer(ctx, &api.PrepareContainerRequest{
		ContainerId: "c1", Spec: []byte(spec),
		Rootfs: &api.Rootfs{Source: &api.Rootfs_Block{Block: &api.BlockDevice{Serial: "r123"}}},
	})
	wantErr(t, err, errdefs.IsNotFound, "r123")
	if _, err := os.Stat(filepath.Join(h.dir, "bundles", "c1")); !os.IsNotExist(err) {
		t.Errorf("bundle left behind: %v", err)
	}
	_, err = h.client.Agent().PrepareContainer(ctx, &api.PrepareContainerRequest{
		ContainerId: "c1", Spec: []byte(spec),
		Rootfs: &api.Rootfs{Source: &api.Rootfs_GuestPull{GuestPull: &api.GuestPull{Image: "docker.io/library/busybox"}}},
	})
	wantErr(t, err, errdefs.IsNotImplemented, "guest_pull")
}

func TestStreamsThroughClient(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	_, err := h.client.OpenStream(ctx, "c1", "-", api.StreamStdout)
	wantErr(t, err, errdefs.IsFailedPrecondition, "sandbox not set up")
	if _, err := h.client.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	out, err := h.client.OpenStream(ctx, "c1", "-", api.StreamStdout)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	_, err = h.client.OpenStream(ctx, "c1", "", api.StreamStdout)
	wantErr(t, err, errdefs.IsAlreadyExists, "stdout")
	_, err = h.client.OpenStream(ctx, "c1", "", "stdlog")
	wantErr(t, err, errdefs.IsInvalidArgument, "stdlog")

	// Stand in for the runc task service: write the FIFO the guest made.
	path, ok := h.agent.streams.Path("c1", "", api.StreamStdout)
	if !ok {
		t.Fatal("no fifo registered")
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("hello from the guest\n"))
	w.Close()
	got, err := io.ReadAll(out)
	if err != nil || string(got) != "hello from the guest\n" {
		t.Errorf("stdout = %q, %v", got, err)
	}

	in, err := h.client.OpenStream(ctx, "c1", "e1", api.StreamStdin)
	if err != nil {
		t.Fatal(err)
	}
	path, _ = h.agent.streams.Path("c1", "e1", api.StreamStdin)
	// A blocking open returns once the agent's writer end is open too (as
	// the task service's does); a non-blocking one could read EOF first.
	r, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	in.Write([]byte("typed"))
	in.(interface{ CloseWrite() error }).CloseWrite()
	got, err = io.ReadAll(r)
	if err != nil || string(got) != "typed" {
		t.Errorf("stdin fifo = %q, %v", got, err)
	}
	// A read the policy denies is answered OK and stays silent.
	secret, err := h.client.OpenStream(ctx, "c1", "secret", api.StreamStdout)
	if err != nil {
		t.Fatalf("denied read should still open: %v", err)
	}
	path, _ = h.agent.streams.Path("c1", "secret", api.StreamStdout)
	w, err = os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("classified"))
	w.Close()
	if got, err := io.ReadAll(secret); err != nil || len(got) != 0 {
		t.Errorf("denied stream carried %q, %v", got, err)
	}

	h.agent.streams.ReleaseContainer("c1")
	if _, err := os.Stat(filepath.Join(h.dir, "io", "c1")); !os.IsNotExist(err) {
		t.Errorf("fifo dir left behind: %v", err)
	}
}

func TestDestroySandbox(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	if _, err := h.client.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Agent().DestroySandbox(ctx, &api.DestroySandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-h.destroyed:
		if !strings.Contains(r, "destroyed") {
			t.Errorf("reason %q", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("DestroySandbox did not trigger the power-off")
	}
}

// BenchmarkHealthRoundTrip is one agent call through ttrpc, the gate and
// the allow-all policy over a unix socket: the agent's own overhead per
// request, without a VM or vsock.
func BenchmarkHealthRoundTrip(b *testing.B) {
	h := startB(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.client.Agent().Health(ctx, &api.HealthRequest{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestServeConn is the readiness path: the agent serves the API, policy
// gate included, on a connection it opened itself, and the host makes its
// client of that connection without dialling.
func TestServeConn(t *testing.T) {
	var tick atomic.Uint64 // a guest clock that moves on each reading
	h := startWith(t, func(c *Config) { c.Now = func() uint64 { return tick.Add(1) } })
	if hr := h.client.Health(); hr.GetAnnouncedNs() != 0 || hr.GetFirstRequestNs() != 0 || hr.GetFirstReplyNs() != 0 {
		t.Errorf("health before any announcement = %+v, want no announcement or first exchange", hr)
	}
	hostSide, guestSide := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.agent.ServeConn(ctx, guestSide)
	c, err := agent.NewClient(ctx, hostSide, unixDialer{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := c.Health()
	if first.GetVersion() != "test" || first.GetNowNs() == 0 {
		t.Errorf("health over the agent's own connection = %+v", first)
	}
	// Later Health calls report when the first request was read and its
	// answer written, around the clock reading of that answer. The write
	// may return after the host already has the answer: ask until it did.
	var hr *api.HealthResponse
	for hr.GetFirstReplyNs() == 0 && ctx.Err() == nil {
		if hr, err = c.Agent().Health(ctx, &api.HealthRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	announced, req, reply := hr.GetAnnouncedNs(), hr.GetFirstRequestNs(), hr.GetFirstReplyNs()
	if !(announced > 0 && announced < req && req < first.GetNowNs() && first.GetNowNs() < reply && reply < hr.GetNowNs()) {
		t.Errorf("announced %d, first request %d, first answer made %d, written %d, now %d: want strictly increasing",
			announced, req, first.GetNowNs(), reply, hr.GetNowNs())
	}
	nctx := namespaces.WithNamespace(ctx, "k8s.io")
	_, err = c.Task().Create(nctx, &task.CreateTaskRequest{ID: "c1", Bundle: "/b"})
	wantErr(t, err, errdefs.IsFailedPrecondition, "sandbox not set up")
}

// A host that gives up on a create after PrepareContainer deletes the task
// it never got: the guest answers NotFound and still removes the bundle
// (and its mounts), so the rootfs disk can be unplugged; a second delete
// finds nothing.
func TestDeleteOfPreparedContainerRemovesBundle(t *testing.T) {
	h := start(t)
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	if _, err := h.client.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	prepareC1(t, h, ctx, &specs.Process{Args: []string{"/pause"}, Cwd: "/"})
	bundle := filepath.Join(h.dir, "bundles", "c1")
	if _, err := os.Stat(bundle); err != nil {
		t.Fatalf("prepared bundle: %v", err)
	}
	_, err := h.client.Task().Delete(ctx, &task.DeleteRequest{ID: "c1"})
	wantErr(t, err, errdefs.IsNotFound)
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Errorf("bundle of a container never created left behind: %v", err)
	}
	_, err = h.client.Task().Delete(ctx, &task.DeleteRequest{ID: "c1"})
	wantErr(t, err, errdefs.IsNotFound)
}
