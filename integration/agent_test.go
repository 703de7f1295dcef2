//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	cg2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coco-runtime/coco/configs/policies"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/qemu"
	"github.com/coco-runtime/coco/virtcontainers/agent"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// agentRepoRoot finds the module root from this file.
func agentRepoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above " + file)
		}
		dir = parent
	}
}

// agentInitrd builds the current coco-agent and an initrd around it from the
// kernel, modules and crun of `make guest-assets` (build/guest), so the test
// always runs the agent source it sits next to.
func agentInitrd(t *testing.T, repo, guest string) string {
	t.Helper()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "coco-agent")
	// The Makefile's build (GO_TAGS), so the test boots what `make` ships.
	build := exec.Command("go", "build", "-tags", "grpcnotrace", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./guest-assets/agent/cmd/coco-agent")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build coco-agent: %v\n%s", err, out)
	}
	out := filepath.Join(tmp, "initrd.img")
	mk := exec.Command("go", "run", "./guest-assets/cmd/mkinitrd", "-assets", guest, "-init", bin, "-o", out)
	mk.Dir = repo
	if b, err := mk.CombinedOutput(); err != nil {
		t.Skipf("guest assets incomplete (%v: %s): run `make guest-assets`; this test would boot coco-agent and run containers through it", err, b)
	}
	return out
}

// agentBusyboxImage makes a read-only EROFS root filesystem holding Debian's
// static busybox with its applets as symlinks.
func agentBusyboxImage(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox-static not installed (scripts/install-deps.sh); the test would run it in the guest")
	}
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Skip("erofs-utils not installed (scripts/install-deps.sh)")
	}
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	for _, d := range []string{"bin", "proc", "sys", "dev", "etc", "tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "echo", "cat", "sleep", "awk", "hostname", "true", "ls", "head"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(tmp, "rootfs.erofs")
	if out, err := exec.Command("mkfs.erofs", "--quiet", "-T0", img, root).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}
	return img
}

// agentSpec is a minimal container spec like containerd writes one, with the
// host-only parts the guest must rewrite (namespace paths, a host bind mount).
func agentSpec(args []string, shareWith string) []byte {
	s := specs.Spec{
		Version:  specs.Version,
		Hostname: "",
		Process: &specs.Process{
			Args: args, Cwd: "/", Env: []string{"PATH=/bin"},
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  []string{"CAP_KILL", "CAP_SETUID", "CAP_SETGID"},
				Effective: []string{"CAP_KILL", "CAP_SETUID", "CAP_SETGID"},
				Permitted: []string{"CAP_KILL", "CAP_SETUID", "CAP_SETGID"},
			},
			NoNewPrivileges: true,
		},
		Root: &specs.Root{Path: "rootfs", Readonly: true},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev"}},
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/containerd/sandboxes/x/hosts", Options: []string{"rbind", "ro"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/sandboxes/x/shm", Options: []string{"rbind", "rw"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: "kubepods-pod1.slice:cri-containerd:x",
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"},
			},
			MaskedPaths:   []string{"/proc/kcore", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/sys"},
		},
	}
	if shareWith != "" {
		for i := range s.Linux.Namespaces {
			if t := s.Linux.Namespaces[i].Type; t == specs.IPCNamespace || t == specs.UTSNamespace {
				s.Linux.Namespaces[i].Path = "/proc/" + shareWith + "/ns/" + string(t)
			}
		}
	}
	b, _ := json.Marshal(&s)
	return b
}

// agentEventLog collects the guest's event stream.
type agentEventLog struct {
	mu     sync.Mutex
	events []any
	seqs   []uint64
	cond   chan struct{}
}

func (l *agentEventLog) run(ctx context.Context, s api.Agent_EventsClient) {
	for {
		e, err := s.Recv()
		if err != nil {
			return
		}
		v, err := agent.DecodeEvent(e)
		if err != nil {
			continue
		}
		l.mu.Lock()
		l.events = append(l.events, v)
		l.seqs = append(l.seqs, e.GetSeq())
		close(l.cond)
		l.cond = make(chan struct{})
		l.mu.Unlock()
	}
}

// wait returns the first event that match accepts, waiting up to d.
func (l *agentEventLog) wait(t *testing.T, d time.Duration, what string, match func(any) bool) any {
	t.Helper()
	deadline := time.After(d)
	for {
		l.mu.Lock()
		for _, e := range l.events {
			if match(e) {
				l.mu.Unlock()
				return e
			}
		}
		ch := l.cond
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %s event within %s; got %d events", what, d, len(l.events))
		}
	}
}

// agentCollector reads a stream into a buffer.
type agentCollector struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func agentCollect(c net.Conn) *agentCollector {
	col := &agentCollector{done: make(chan struct{})}
	go func() {
		defer close(col.done)
		b := make([]byte, 4096)
		for {
			n, err := c.Read(b)
			col.mu.Lock()
			col.buf.Write(b[:n])
			col.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return col
}

func (c *agentCollector) waitFor(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		ok := strings.Contains(c.buf.String(), s)
		c.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Fatalf("stream never showed %q; got %q", s, c.buf.String())
}

// TestAgentInVM boots the guest kernel with coco-agent as PID 1 under QEMU
// TCG through the QEMU driver, and drives a pod through the agent alone:
// setup, the agent's pause container, a container from a hot-plugged EROFS
// image with stdout and stderr, exec with stdin, a signal and its exit code,
// an OOM kill under a small memory limit, and DestroySandbox powering the VM
// off by itself. COCO_AGENT_CONSOLE=1 logs the guest console even on success.
func TestAgentInVM(t *testing.T) {
	for _, tool := range []string{"qemu-system-x86_64", qemu.DefaultDaemon} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh); the test would boot the guest and drive the agent", tool)
		}
	}
	repo := agentRepoRoot(t)
	guest := os.Getenv("COCO_GUEST_DIR")
	if guest == "" {
		guest = filepath.Join(repo, "build", "guest")
	}
	if _, err := os.Stat(filepath.Join(guest, "vmlinux")); err != nil {
		t.Skipf("no guest kernel (%v): run `make guest-assets`", err)
	}
	initrdPath := agentInitrd(t, repo, guest)
	image := agentBusyboxImage(t)

	state, err := os.MkdirTemp("", "ag")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(state)
	cfg := hypervisor.Config{
		ID: filepath.Base(state), StateDir: state, Machine: "q35", Accel: "tcg",
		VCPUs: 2, MemoryMiB: 512, Kernel: filepath.Join(guest, "vmlinux"), Initrd: initrdPath,
		KernelParams: "quiet", Vsock: hypervisor.Vsock{Mode: "vhost-user"}, BootTimeout: 90 * time.Second,
	}
	vm, err := qemu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ctx = namespaces.WithNamespace(ctx, "k8s.io")
	started := time.Now()
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			vm.Stop(context.Background())
		}
		if t.Failed() || os.Getenv("COCO_AGENT_CONSOLE") != "" {
			if b, err := os.ReadFile(vm.Info().ConsoleLog); err == nil {
				t.Logf("guest console:\n%s", b)
			}
		}
	}()
	dctx, dcancel := context.WithTimeout(ctx, cfg.BootTimeout)
	c, err := agent.Dial(dctx, vm)
	dcancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := c.Health()
	t.Logf("agent %s ready %.3fs after kernel start (guest CLOCK_BOOTTIME; PID 1 started at %.3fs); %s wall from QEMU start",
		h.GetVersion(), float64(h.GetAgentReadyNs())/1e9, float64(h.GetAgentStartNs())/1e9, time.Since(started).Round(time.Millisecond))
	if h.GetAgentReadyNs() == 0 || h.GetAgentReadyNs() < h.GetAgentStartNs() {
		t.Errorf("health timestamps: %+v", h)
	}

	// Everything but Health is refused before SetupSandbox.
	if _, err := c.Task().State(ctx, &taskAPI.StateRequest{ID: "pod"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("State before setup: %v, want FailedPrecondition", err)
	}
	events := &agentEventLog{cond: make(chan struct{})}
	stream, err := c.Agent().Events(ctx, &api.EventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	go events.run(ctx, stream)
	if _, err := c.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{
		SandboxId: "pod", Hostname: "coco-pod", Dns: "nameserver 10.0.0.10\n", HostTime: timestamppb.Now(),
		Policy: policies.AllowAll, // compiled by the Rego engine in the guest
	}); err != nil {
		t.Fatal(err)
	}

	// The sandbox (pause) container, from the agent's own rootfs, as in
	// podsandbox mode (the sandbox API needs none: see the CRI tests).
	podPID, err := startSandboxContainer(ctx, c, "pod")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.Task().State(ctx, &taskAPI.StateRequest{ID: "pod"}); err != nil || st.GetStatus() != tasktypes.Status_RUNNING {
		t.Fatalf("sandbox container state = %v, %v", st.GetStatus(), err)
	}
	t.Logf("sandbox container pid %d", podPID)

	// An app container from a hot-plugged EROFS disk, sharing the pod's
	// UTS namespace (hostname) through a host namespace path.
	run := func(id, serial string, args []string, edit func(*specs.Spec)) (*agentCollector, *agentCollector) {
		t.Helper()
		if err := vm.AddDisk(ctx, hypervisor.Disk{ID: serial, Path: image, ReadOnly: true}); err != nil {
			t.Fatal(err)
		}
		raw := agentSpec(args, "4242")
		if edit != nil {
			var s specs.Spec
			json.Unmarshal(raw, &s)
			edit(&s)
			raw, _ = json.Marshal(&s)
		}
		prep, err := c.Agent().PrepareContainer(ctx, &api.PrepareContainerRequest{
			ContainerId: id, Spec: raw,
			Rootfs: &api.Rootfs{Source: &api.Rootfs_Block{Block: &api.BlockDevice{Serial: serial, Fstype: "erofs"}}},
			Files:  []*api.File{{Destination: "/etc/hosts", Content: []byte("10.1.2.3 from-the-host\n"), Mode: 0o644}},
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.OpenStream(ctx, id, "-", api.StreamStdout)
		if err != nil {
			t.Fatal(err)
		}
		errs, err := c.OpenStream(ctx, id, "-", api.StreamStderr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Task().Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: prep.GetBundle(), Stdout: "s", Stderr: "s"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Task().Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
		return agentCollect(out), agentCollect(errs)
	}
	out, errs := run("c1", "c1disk", []string{"sh", "-c",
		"echo hello-from-c1; hostname; cat /etc/hosts; echo oops >&2; trap 'exit 42' TERM; while true; do sleep 0.1; done"}, nil)
	out.waitFor(t, "hello-from-c1\ncoco-pod\n10.1.2.3 from-the-host\n", time.Minute)
	errs.waitFor(t, "oops\n", 10*time.Second)

	// Pause/resume (cgroup freezer), pids, stats and a live update come from
	// containerd's runc task service inside the guest.
	if _, err := c.Task().Pause(ctx, &taskAPI.PauseRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Task().State(ctx, &taskAPI.StateRequest{ID: "c1"}); err != nil || st.GetStatus() != tasktypes.Status_PAUSED {
		t.Errorf("state after pause = %v, %v", st.GetStatus(), err)
	}
	if _, err := c.Task().Resume(ctx, &taskAPI.ResumeRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Task().State(ctx, &taskAPI.StateRequest{ID: "c1"}); err != nil || st.GetStatus() != tasktypes.Status_RUNNING {
		t.Errorf("state after resume = %v, %v", st.GetStatus(), err)
	}
	if pids, err := c.Task().Pids(ctx, &taskAPI.PidsRequest{ID: "c1"}); err != nil || len(pids.GetProcesses()) == 0 {
		t.Errorf("pids = %v, %v", pids, err)
	}
	limit := int64(64 << 20)
	resJSON, _ := json.Marshal(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
	res := &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: resJSON}
	if _, err := c.Task().Update(ctx, &taskAPI.UpdateTaskRequest{ID: "c1", Resources: res}); err != nil {
		t.Errorf("update: %v", err)
	}
	stats, err := c.Task().Stats(ctx, &taskAPI.StatsRequest{ID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := typeurl.UnmarshalAny(stats.GetStats()); err != nil {
		t.Errorf("stats: %v", err)
	} else if m, ok := v.(*cg2stats.Metrics); !ok || m.GetMemory().GetUsageLimit() != uint64(limit) || m.GetPids().GetCurrent() == 0 {
		t.Errorf("stats = %T %v, want cgroup v2 metrics with the updated 64 MiB limit", v, v)
	}

	// Exec with stdin: cat echoes what the host sends until the host's EOF.
	procSpec, _ := json.Marshal(&specs.Process{Args: []string{"sh", "-c", "cat; echo exec-done; exit 3"}, Cwd: "/", Env: []string{"PATH=/bin"}})
	in, err := c.OpenStream(ctx, "c1", "e1", api.StreamStdin)
	if err != nil {
		t.Fatal(err)
	}
	eout, err := c.OpenStream(ctx, "c1", "e1", api.StreamStdout)
	if err != nil {
		t.Fatal(err)
	}
	ecol := agentCollect(eout)
	if _, err := c.Task().Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1", Stdin: "s", Stdout: "s",
		Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: procSpec}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Task().Start(ctx, &taskAPI.StartRequest{ID: "c1", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(in, "ping from host\n")
	in.(interface{ CloseWrite() error }).CloseWrite()
	w, err := c.Task().Wait(ctx, &taskAPI.WaitRequest{ID: "c1", ExecID: "e1"})
	if err != nil || w.GetExitStatus() != 3 {
		t.Fatalf("exec wait = %v, %v; want exit 3", w, err)
	}
	ecol.waitFor(t, "ping from host\nexec-done\n", 10*time.Second)
	if _, err := c.Task().Delete(ctx, &taskAPI.DeleteRequest{ID: "c1", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	in.Close()

	// A terminal: the OCI runtime's console reaches the host on the stdout stream.
	tout, err := c.OpenStream(ctx, "c1", "t1", api.StreamStdout)
	if err != nil {
		t.Fatal(err)
	}
	tcol := agentCollect(tout)
	termSpec, _ := json.Marshal(&specs.Process{Terminal: true, Args: []string{"sh", "-c", "tty; echo term-ok"}, Cwd: "/", Env: []string{"PATH=/bin"}})
	if _, err := c.Task().Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "t1", Terminal: true, Stdout: "s",
		Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: termSpec}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Task().Start(ctx, &taskAPI.StartRequest{ID: "c1", ExecID: "t1"}); err != nil {
		t.Fatal(err)
	}
	if w, err := c.Task().Wait(ctx, &taskAPI.WaitRequest{ID: "c1", ExecID: "t1"}); err != nil || w.GetExitStatus() != 0 {
		t.Fatalf("terminal exec wait = %v, %v", w, err)
	}
	tcol.waitFor(t, "/dev/pts/0\r\nterm-ok\r\n", 10*time.Second)
	if _, err := c.Task().Delete(ctx, &taskAPI.DeleteRequest{ID: "c1", ExecID: "t1"}); err != nil {
		t.Fatal(err)
	}

	// OOM: a container that allocates without bound under a 24 MiB limit.
	run("c2", "c2disk", []string{"awk", "BEGIN { s = \"xxxxxxxx\"; while (1) s = s s }"}, func(s *specs.Spec) {
		limit := int64(24 << 20)
		s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}
	})
	events.wait(t, time.Minute, "TaskOOM c2", func(e any) bool {
		x, ok := e.(*eventstypes.TaskOOM)
		return ok && x.ContainerID == "c2"
	})
	w, err = c.Task().Wait(ctx, &taskAPI.WaitRequest{ID: "c2"})
	if err != nil || w.GetExitStatus() != 137 {
		t.Errorf("OOM-killed container exit = %v, %v; want 137", w, err)
	}
	if _, err := c.Task().Delete(ctx, &taskAPI.DeleteRequest{ID: "c2"}); err != nil {
		t.Fatal(err)
	}

	// The TEE default policy, set at run time (last: it would refuse this
	// test's bare container specs): exec is now refused with the rule
	// named, and the policy cannot be changed back.
	if _, err := c.Agent().SetPolicy(ctx, &api.SetPolicyRequest{Policy: policies.DefaultTEE}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Task().Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e2",
		Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: procSpec}})
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "agent_policy.ExecProcessRequest") {
		t.Errorf("exec under the TEE policy: %v, want PermissionDenied naming the rule", err)
	}
	if _, err := c.Agent().SetPolicy(ctx, &api.SetPolicyRequest{Policy: policies.AllowAll}); !errdefs.IsPermissionDenied(err) {
		t.Errorf("SetPolicy under the TEE policy: %v, want PermissionDenied", err)
	}

	// A signal and its exit code.
	if _, err := c.Task().Kill(ctx, &taskAPI.KillRequest{ID: "c1", Signal: 15}); err != nil {
		t.Fatal(err)
	}
	w, err = c.Task().Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
	if err != nil || w.GetExitStatus() != 42 {
		t.Fatalf("wait after SIGTERM = %v, %v; want 42", w, err)
	}
	events.wait(t, 10*time.Second, "TaskExit c1", func(e any) bool {
		x, ok := e.(*eventstypes.TaskExit)
		return ok && x.ContainerID == "c1" && x.ID == "c1" && x.ExitStatus == 42
	})
	if _, err := c.Task().Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-out.done:
	case <-time.After(10 * time.Second):
		t.Error("stdout stream not closed after the container was deleted")
	}
	if err := vm.RemoveDisk(ctx, "c1disk"); err != nil {
		t.Errorf("remove disk: %v", err)
	}

	// Events came in order, with exec exits before their container's exit.
	events.mu.Lock()
	var order []string
	for i, e := range events.events {
		if events.seqs[i] != uint64(i+1) {
			t.Errorf("event %d has seq %d", i, events.seqs[i])
		}
		order = append(order, fmt.Sprintf("%T", e))
	}
	events.mu.Unlock()
	t.Logf("events: %s", strings.Join(order, " "))

	// DestroySandbox: the VM powers itself off.
	if _, err := c.Agent().DestroySandbox(ctx, &api.DestroySandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	st, err := vm.Wait(wctx)
	wcancel()
	if err != nil {
		t.Fatalf("VM did not exit after DestroySandbox: %v", err)
	}
	t.Logf("VM exited: %s (code %d)", st.Reason, st.Code)
	if b, err := os.ReadFile(vm.Info().ConsoleLog); err == nil && os.Getenv("COCO_AGENT_CONSOLE") != "" {
		t.Logf("guest console:\n%s", b)
	}
	if err := vm.Stop(context.Background()); err != nil {
		t.Errorf("stop after exit: %v", err)
	}
	stopped = true
	if _, err := os.Stat(cfg.StateDir); !os.IsNotExist(err) {
		t.Errorf("state dir %s left behind", cfg.StateDir)
	}
}
