package pausetask

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// The pod's pid namespace holder starts the real coco-pause once, in a pid
// namespace of its own, hands every caller the same pid, and once pause is
// gone says so instead of handing out a dead pid.
func TestPIDHolder(t *testing.T) {
	needRoot(t)
	bin, err := buildPause()
	if err != nil {
		t.Fatal(err)
	}
	h := NewPIDHolder(New(Config{Binary: bin, Reaper: waitReaper{}}))
	ctx := context.Background()
	pid, err := h.Get(ctx, "pod1")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := h.Get(ctx, "pod1"); err != nil || again != pid {
		t.Fatalf("second Get = %d, %v; want the same pause (pid %d)", again, err, pid)
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
		_, err := h.Get(ctx, "pod1")
		if errdefs.IsFailedPrecondition(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get after pause exited = %v, want FailedPrecondition", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if _, err := NewPIDHolder(nil).Get(ctx, "pod1"); !errdefs.IsNotImplemented(err) {
		t.Errorf("holder without a pause service: %v, want NotImplemented", err)
	}
}
