//go:build integration

package bench

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

// The bench finds a pod's processes by argv and by parent: a child started
// here is found both ways, and a name that is not running is not.
func TestFindProcsAndChildren(t *testing.T) {
	cmd := exec.Command("sleep", "4242")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	if got := FindProcs("sleep", "4242", false); !slices.Contains(got, pid) {
		t.Errorf("FindProcs(sleep, 4242) = %v, want %d in it", got, pid)
	}
	if got := FindProcs("sleep", "42", true); !slices.Contains(got, pid) {
		t.Errorf("FindProcs(sleep, 42, contains) = %v, want %d in it", got, pid)
	}
	if got := FindProcs("sleep", "42", false); slices.Contains(got, pid) {
		t.Errorf("FindProcs(sleep, 42, exact) = %v: matched a partial argument", got)
	}
	if got := Children(os.Getpid(), "sleep"); !slices.Equal(got, []int{pid}) {
		t.Errorf("Children(self, sleep) = %v, want [%d]", got, pid)
	}
	if got := Children(os.Getpid(), "pause"); len(got) != 0 {
		t.Errorf("Children(self, pause) = %v, want none", got)
	}
}
