package container

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// A disk is found by serial only once it has a size: sysfs shows the
// serial a moment before the disk can be mounted.
func TestFindDiskWaitsForSize(t *testing.T) {
	sys := t.TempDir()
	m := NewManager(Config{SysBlock: sys, DevDir: "/dev", DeviceWait: 2 * time.Second})
	vda := filepath.Join(sys, "vda")
	os.MkdirAll(vda, 0o755)
	os.WriteFile(filepath.Join(vda, "serial"), []byte("other\n"), 0o644)
	vdb := filepath.Join(sys, "vdb")
	os.MkdirAll(vdb, 0o755)
	os.WriteFile(filepath.Join(vdb, "serial"), []byte("rootfs1\n"), 0o644)
	os.WriteFile(filepath.Join(vdb, "size"), []byte("0\n"), 0o644)

	found := make(chan string, 1)
	go func() {
		dev, err := m.FindDisk(context.Background(), "rootfs1")
		if err != nil {
			dev = err.Error()
		}
		found <- dev
	}()
	select {
	case dev := <-found:
		t.Fatalf("found %q while its size was 0", dev)
	case <-time.After(100 * time.Millisecond):
	}
	os.WriteFile(filepath.Join(vdb, "size"), []byte("3880\n"), 0o644)
	if dev := <-found; dev != "/dev/vdb" {
		t.Errorf("FindDisk = %q, want /dev/vdb", dev)
	}

	m = NewManager(Config{SysBlock: sys, DeviceWait: 50 * time.Millisecond})
	if _, err := m.FindDisk(context.Background(), "absent"); !errdefs.IsNotFound(err) {
		t.Errorf("missing disk: %v, want NotFound", err)
	}
}
