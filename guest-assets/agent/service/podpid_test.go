package service

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"

	"github.com/coco-runtime/coco/guest-assets/agent/pause"
	"github.com/coco-runtime/coco/guest-assets/agent/pausetask"
)

// exitReaper stands in for containerd's reaper, which needs the process to
// be a subreaper fed by a SIGCHLD loop (the agent is PID 1).
type exitReaper struct{}

func (exitReaper) Start(c *exec.Cmd) (chan runc.Exit, error) {
	return make(chan runc.Exit), c.Start()
}

func (exitReaper) Wait(c *exec.Cmd, _ chan runc.Exit) (int, error) {
	err := c.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}

// The pod's pid namespace holder starts the real coco-pause once, in a pid
// namespace of its own, hands every caller the same pid, and once pause is
// gone says so instead of handing out a dead pid.
func TestPodPIDHolder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: forks coco-pause into a new pid namespace (what it checks: one holder per pod, in its own pid namespace, and a clear error once it is gone)")
	}
	if _, err := exec.LookPath(pause.Compiler); err != nil {
		t.Skipf("needs %s (musl-tools, scripts/install-deps.sh) to build coco-pause: %v", pause.Compiler, err)
	}
	bin := filepath.Join(t.TempDir(), "coco-pause")
	args := append(append([]string{}, pause.CFlags...), "-o", bin, filepath.Join("..", "..", "..", pause.Source))
	if out, err := exec.Command(pause.Compiler, args...).CombinedOutput(); err != nil {
		t.Fatalf("build coco-pause: %v\n%s", err, out)
	}
	h := &podPIDHolder{pause: pausetask.New(pausetask.Config{Binary: bin, Reaper: exitReaper{}})}
	ctx := context.Background()
	pid, err := h.get(ctx, "pod1")
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	if again, err := h.get(ctx, "pod1"); err != nil || again != pid {
		t.Fatalf("second get = %d, %v; want the same pause (pid %d)", again, err, pid)
	}
	mine, _ := os.Readlink("/proc/self/ns/pid")
	its, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "pid"))
	if err != nil || its == mine {
		t.Fatalf("pause pid namespace %q (err %v), the test's %q: want a new one", its, err, mine)
	}

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := h.get(ctx, "pod1")
		if errdefs.IsFailedPrecondition(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("get after pause exited = %v, want FailedPrecondition", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if _, err := (&podPIDHolder{}).get(ctx, "pod1"); !errdefs.IsNotImplemented(err) {
		t.Errorf("holder without a pause service: %v, want NotImplemented", err)
	}
}
