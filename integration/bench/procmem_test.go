//go:build integration

package bench

import (
	"os"
	"os/exec"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
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

// A helper's mappings of the guest's memory file count with the VM: the
// file QEMU maps shared (64 MiB or more) is found, and the pages touched
// through it land in the skipped sum, not the process's own.
func TestGuestMemoryCountsWithTheVM(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "guest-ram")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := 0; i < 8<<20; i += 4096 {
		mem[i] = 1
	}
	ram := guestRAMFiles(os.Getpid())
	if len(ram) != 1 {
		t.Fatalf("guest memory files found: %v, want the one 64 MiB shared mapping", ram)
	}
	own, guest, err := readMemSplit(os.Getpid(), ram)
	if err != nil {
		t.Fatal(err)
	}
	if guest.RSSKiB < 8<<10 {
		t.Errorf("guest memory counted: %+v, want the 8 MiB touched", guest)
	}
	all, _ := ReadMem(os.Getpid())
	if d := all.RSSKiB - (own.RSSKiB + guest.RSSKiB); d > 1024 || d < -1024 {
		t.Errorf("split %v + %v does not add up to the whole %v", own, guest, all)
	}
}
