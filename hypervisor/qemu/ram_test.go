package qemu

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestOpenRAMHugePagesLeaveNoMount: the memory file gets 2 MiB pages once
// mapped aligned, and neither its mount nor its directory outlives the call.
func TestOpenRAMHugePagesLeaveNoMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs; would check that guest memory gets huge pages and no mount is left")
	}
	state := t.TempDir()
	f, hugeErr := OpenRAM(state, 16)
	if hugeErr != nil {
		t.Fatalf("OpenRAM: %v", hugeErr)
	}
	defer f.Close()
	if _, err := os.Stat(ramDir(state)); !os.IsNotExist(err) {
		t.Errorf("%s left behind (stat: %v)", ramDir(state), err)
	}
	if mounted(t, ramDir(state)) {
		t.Errorf("tmpfs still mounted on %s", ramDir(state))
	}

	const huge = 2 << 20
	if err := f.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	// Map 2 MiB-aligned, as QEMU does with align=2M.
	reserve, err := unix.Mmap(-1, 0, 8<<20+huge, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(reserve)
	skip := (huge - uintptr(unsafe.Pointer(&reserve[0]))%huge) % huge
	p, err := unix.MmapPtr(int(f.Fd()), 0, unsafe.Pointer(&reserve[skip]), 8<<20,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_FIXED)
	if err != nil {
		t.Fatal(err)
	}
	addr := uintptr(p)
	mem := unsafe.Slice((*byte)(p), 8<<20)
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	if pmd := smapsField(t, addr, "ShmemPmdMapped:"); pmd == "0 kB" {
		if mode, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/shmem_enabled"); strings.Contains(string(mode), "[deny]") {
			t.Skipf("this host denies huge pages to every tmpfs (shmem_enabled %s); would check they back guest memory", strings.TrimSpace(string(mode)))
		}
		t.Errorf("guest memory file mapped in 4 KiB pages (ShmemPmdMapped %s): no huge pages", pmd)
	}
}

// TestOpenRAMFallsBackToMemfd: where the mount cannot be made, guest memory
// is still a file QEMU can map, and the reason is given.
func TestOpenRAMFallsBackToMemfd(t *testing.T) {
	f, hugeErr := OpenRAM("/nonexistent/coco-state", 16)
	if f == nil {
		t.Fatalf("no file at all: %v", hugeErr)
	}
	defer f.Close()
	if hugeErr == nil || !strings.Contains(hugeErr.Error(), "/nonexistent/coco-state/ram") {
		t.Errorf("hugeErr = %v, want the directory it could not use", hugeErr)
	}
	if err := f.Truncate(1 << 20); err != nil {
		t.Errorf("fallback file not usable as memory: %v", err)
	}
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// smapsField returns a field of the mapping that starts at addr.
func smapsField(t *testing.T, addr uintptr, field string) string {
	t.Helper()
	fh, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	in := false
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		l := sc.Text()
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = strings.SplitN(f[0], "-", 2)[0] == fmt.Sprintf("%x", addr)
			continue
		}
		if in && strings.HasPrefix(l, field) {
			return strings.TrimSpace(strings.TrimPrefix(l, field))
		}
	}
	t.Fatalf("no mapping at %#x in smaps", addr)
	return ""
}
