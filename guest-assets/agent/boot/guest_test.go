//go:build linux

package boot

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHasPCIDevice(t *testing.T) {
	dir := t.TempDir()
	add := func(addr, vendor, device string) {
		p := filepath.Join(dir, addr)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(p, "vendor"), []byte(vendor+"\n"), 0o644)
		os.WriteFile(filepath.Join(p, "device"), []byte(device+"\n"), 0o644)
	}
	add("0000:00:01.0", "0x8086", "0x29c0") // host bridge
	add("0000:00:02.0", "0x1af4", "0x1053") // virtio-vsock
	if present, known := hasPCIDevice(dir, virtioBlockIDs); present || !known {
		t.Fatalf("no virtio-blk yet: present %v known %v", present, known)
	}
	add("0000:01:00.0", "0x1af4", "0x1001")
	if present, known := hasPCIDevice(dir, virtioBlockIDs); !present || !known {
		t.Fatalf("transitional virtio-blk: present %v known %v", present, known)
	}
	if _, known := hasPCIDevice(filepath.Join(dir, "none"), virtioBlockIDs); known {
		t.Fatal("no PCI bus in sysfs must be unknown, so the caller waits for the driver")
	}
}
