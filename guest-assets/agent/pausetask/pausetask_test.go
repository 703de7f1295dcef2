//go:build linux

package pausetask

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	cevents "github.com/containerd/containerd/v2/core/events"
	cruntime "github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/guest-assets/agent/pause"
	"golang.org/x/sys/unix"
)

// waitReaper stands in for containerd's reaper, which needs the process to
// be a subreaper fed by a SIGCHLD loop (the agent is PID 1).
type waitReaper struct{}

func (waitReaper) Start(c *exec.Cmd) (chan runc.Exit, error) {
	return make(chan runc.Exit), c.Start()
}

func (waitReaper) Wait(c *exec.Cmd, _ chan runc.Exit) (int, error) {
	err := c.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}

// recorder keeps the topics published; delay is how long a delivery takes.
type recorder struct {
	delay  time.Duration
	mu     sync.Mutex
	topics []string
}

func (r *recorder) Publish(_ context.Context, topic string, _ cevents.Event) error {
	time.Sleep(r.delay)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, topic)
	return nil
}

func (r *recorder) Close() error { return nil }

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.topics...)
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: forks the pause process into new pid, ipc and uts namespaces (what it checks: the namespaces, hostname and sysctls the pod gets)")
	}
}

// buildPause builds the real coco-pause once per test binary, as the
// Makefile does.
var buildPause = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "coco-pause-test")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "coco-pause")
	args := append(append([]string{}, pause.CFlags...), "-o", bin, filepath.Join("..", "..", "..", pause.Source))
	cmd := exec.Command(pause.Compiler, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", &exec.Error{Name: string(out), Err: err}
	}
	return bin, nil
})

func sandboxSpec() *specs.Spec {
	return &specs.Spec{
		Hostname: "pod-under-test",
		Process:  &specs.Process{Args: []string{"/pause"}, Cwd: "/"},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			Sysctl: map[string]string{"kernel.shm_rmid_forced": "1"},
		},
	}
}

func writeBundle(t *testing.T, s *specs.Spec) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// inNamespaces runs fn on a thread that joined pid's namespaces of kinds.
func inNamespaces(t *testing.T, pid int, fn func(), kinds ...string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		for _, k := range kinds {
			f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "ns", k))
			if err != nil {
				done <- err
				return
			}
			err = unix.Setns(int(f.Fd()), 0)
			f.Close()
			if err != nil {
				done <- err
				return
			}
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPauseTaskLifecycle(t *testing.T) {
	needRoot(t)
	bin, err := buildPause()
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s := New(Config{Binary: bin, Publisher: rec, Reaper: waitReaper{}})
	ctx := context.Background()
	bundle := writeBundle(t, sandboxSpec())
	// The test's own namespaces, read before Create: the forking thread may
	// be the main thread, which then stays in the pod's namespaces.
	mine := map[string]string{}
	for _, ns := range []string{"pid", "ipc", "uts", "mnt"} {
		mine[ns], _ = os.Readlink("/proc/thread-self/ns/" + ns)
	}

	created, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	pid := int(created.Pid)
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	if !s.Has("sb") || s.Has("other") {
		t.Fatalf("Has(sb)=%v Has(other)=%v", s.Has("sb"), s.Has("other"))
	}
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb2", Bundle: bundle}); !errdefs.IsAlreadyExists(errgrpc.ToNative(err)) {
		t.Fatalf("second sandbox container: %v, want AlreadyExists", err)
	}

	for _, ns := range []string{"pid", "ipc", "uts", "mnt"} {
		its, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", ns))
		if err != nil {
			t.Fatal(err)
		}
		if ns == "pid" {
			// The pause process is PID 1 of its own pid namespace.
			its, _ = os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "pid_for_children"))
		}
		if mine[ns] == its {
			t.Errorf("%s namespace shared with the agent (%s)", ns, its)
		}
	}
	status, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if !strings.Contains(string(status), "NSpid:\t"+strconv.Itoa(pid)+"\t1\n") {
		t.Errorf("pause is not PID 1 of a new pid namespace:\n%s", status)
	}
	var hostname, shmForced string
	inNamespaces(t, pid, func() {
		var u unix.Utsname
		unix.Uname(&u)
		hostname = unix.ByteSliceToString(u.Nodename[:])
		b, _ := os.ReadFile("/proc/sys/kernel/shm_rmid_forced")
		shmForced = strings.TrimSpace(string(b))
	}, "uts", "ipc")
	if hostname != "pod-under-test" || shmForced != "1" {
		t.Errorf("in the pod's namespaces: hostname %q, kernel.shm_rmid_forced %q; want pod-under-test, 1", hostname, shmForced)
	}

	st, err := s.State(ctx, &taskAPI.StateRequest{ID: "sb"})
	if err != nil || st.Status != task.Status_CREATED {
		t.Fatalf("State before Start: %v %v", st, err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "sb"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.State(ctx, &taskAPI.StateRequest{ID: "sb"}); st.Status != task.Status_RUNNING || int(st.Pid) != pid {
		t.Fatalf("State after Start: %v", st)
	}
	if _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "sb", ExecID: "e"}); !errdefs.IsNotImplemented(errgrpc.ToNative(err)) {
		t.Errorf("Exec: %v, want NotImplemented", err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb"}); !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		t.Errorf("Delete while running: %v, want FailedPrecondition", err)
	}

	// As PID 1 of its namespace, pause only gets the signals it handles: wait
	// until its SIGTERM handler is in place.
	waitHandles(t, pid, unix.SIGTERM)
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "sb", Signal: uint32(unix.SIGTERM)}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := s.Wait(wctx, &taskAPI.WaitRequest{ID: "sb"})
	if err != nil || w.ExitStatus != 0 {
		t.Fatalf("Wait after SIGTERM: %v %v, want exit 0", w, err)
	}
	if st, _ := s.State(ctx, &taskAPI.StateRequest{ID: "sb"}); st.Status != task.Status_STOPPED {
		t.Fatalf("State after exit: %v", st)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb"}); err != nil {
		t.Fatal(err)
	}
	if s.Has("sb") {
		t.Error("still known after Delete")
	}
	want := []string{cruntime.TaskCreateEventTopic, cruntime.TaskStartEventTopic, cruntime.TaskExitEventTopic, cruntime.TaskDeleteEventTopic}
	if got := rec.got(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("events %v, want %v", got, want)
	}
}

func waitHandles(t *testing.T, pid int, sig unix.Signal) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if hex, ok := strings.CutPrefix(line, "SigCgt:\t"); ok {
				if mask, _ := strconv.ParseUint(hex, 16, 64); mask&(1<<(uint(sig)-1)) != 0 {
					return
				}
			}
		}
	}
	t.Fatalf("pid %d never installed a %v handler", pid, sig)
}

func TestPauseTaskBadSetupLeavesNothing(t *testing.T) {
	needRoot(t)
	bin, err := buildPause()
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Binary: bin, Reaper: waitReaper{}})
	sp := sandboxSpec()
	sp.Linux.Sysctl = map[string]string{"kernel.shmmax": "not-a-number"}
	_, err = s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "sb", Bundle: writeBundle(t, sp)})
	if err == nil || !strings.Contains(err.Error(), "sysctl kernel.shmmax") {
		t.Fatalf("Create with a bad sysctl value: %v, want an error naming it", err)
	}
	if s.Has("sb") {
		t.Error("a failed Create left the sandbox container registered")
	}
}

func TestSupported(t *testing.T) {
	for name, mutate := range map[string]func(*specs.Spec){
		"user namespace": func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		},
		"namespace path": func(s *specs.Spec) { s.Linux.Namespaces[1].Path = "/proc/1/ns/ipc" },
		"host sysctl":    func(s *specs.Spec) { s.Linux.Sysctl["vm.swappiness"] = "1" },
		"no linux":       func(s *specs.Spec) { s.Linux = nil },
	} {
		s := sandboxSpec()
		mutate(s)
		if err := Supported(s); err == nil {
			t.Errorf("%s: supported, want runc to run it", name)
		}
	}
	if err := Supported(sandboxSpec()); err != nil {
		t.Errorf("CRI's sandbox spec: %v", err)
	}
}
