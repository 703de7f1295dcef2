package kvmprobe

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestCachedRecordsAndReuses(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (scripts/install-deps.sh); would check that a probe verdict is cached per boot, /dev/kvm and QEMU binary")
	}
	dir := t.TempDir()
	probe := Cached(dir)
	first := probe(context.Background(), qemu)
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 1 {
		t.Fatalf("cache files %v, want one", files)
	}
	start := time.Now()
	second := probe(context.Background(), qemu)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("cached probe took %v: it probed again", took)
	}
	if (first == nil) != (second == nil) {
		t.Fatalf("cached verdict %v differs from the probe's %v", second, first)
	}

	// A different binary is a different key: the copy is probed afresh.
	copyPath := filepath.Join(t.TempDir(), "qemu")
	b, err := os.ReadFile(qemu)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o755); err != nil {
		t.Fatal(err)
	}
	probe(context.Background(), copyPath)
	files, _ = filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 2 {
		t.Fatalf("cache files %v, want two after probing another binary", files)
	}
}

func TestCachedIgnoresCancelledProbe(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Cached(dir)(ctx, "/bin/true")
	if files, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(files) != 0 {
		t.Fatalf("a probe cut short by ctx was cached: %v", files)
	}
}
