//go:build linux

package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Guest applies SetupSandbox's settings to the running kernel and /etc.
type Guest struct {
	// Root prefixes /etc and /proc/sys (tests use a temp dir); "" is "/".
	Root string
}

// SetHostname sets the kernel hostname and /etc/hostname.
func (g Guest) SetHostname(name string) error {
	if g.Root == "" {
		if err := unix.Sethostname([]byte(name)); err != nil {
			return err
		}
	}
	return g.write("/etc/hostname", name+"\n")
}

// WriteResolvConf writes /etc/resolv.conf.
func (g Guest) WriteResolvConf(content string) error {
	return g.write("/etc/resolv.conf", content)
}

// SetSysctl writes /proc/sys/<key> (dots or slashes separate the parts).
func (g Guest) SetSysctl(key, value string) error {
	p := filepath.Join(g.Root, "/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if !strings.HasPrefix(p, filepath.Join(g.Root, "/proc/sys")+"/") {
		return fmt.Errorf("sysctl %q escapes /proc/sys", key)
	}
	return os.WriteFile(p, []byte(value), 0)
}

// SetClock sets the wall clock (guests under emulation start with a stale one).
func (g Guest) SetClock(t time.Time) error {
	if g.Root != "" {
		return nil
	}
	tv := unix.NsecToTimeval(t.UnixNano())
	return unix.Settimeofday(&tv)
}

func (g Guest) write(p, content string) error {
	p = filepath.Join(g.Root, p)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(content), 0o644)
}

// virtio-blk's PCI IDs: Red Hat's vendor, the transitional and the modern
// (virtio 1.0) device.
var virtioBlockIDs = map[string]bool{"0x1af4:0x1001": true, "0x1af4:0x1042": true}

// HasVirtioBlockPCI reports whether the VM has a virtio-blk PCI function
// (present) and whether it could tell (known: false without a PCI bus in
// sysfs, as on s390 or virtio-mmio machines). It reads only what the PCI
// core enumerated at boot, so it needs no driver.
func HasVirtioBlockPCI() (present, known bool) {
	return hasPCIDevice("/sys/bus/pci/devices", virtioBlockIDs)
}

func hasPCIDevice(dir string, ids map[string]bool) (present, known bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, false
	}
	for _, e := range entries {
		v, err1 := os.ReadFile(filepath.Join(dir, e.Name(), "vendor"))
		d, err2 := os.ReadFile(filepath.Join(dir, e.Name(), "device"))
		if err1 == nil && err2 == nil && ids[strings.TrimSpace(string(v))+":"+strings.TrimSpace(string(d))] {
			return true, true
		}
	}
	return false, true
}

// DiskBySerial returns the device node (in devDir) of the block device
// under sysBlock (/sys/block) whose serial is serial, once the disk has a
// size: the serial shows in sysfs a moment before the size does. "" if
// there is no such disk yet.
func DiskBySerial(sysBlock, devDir, serial string) string {
	entries, _ := os.ReadDir(sysBlock)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "serial"))
		if err != nil || strings.TrimSpace(string(b)) != serial {
			continue
		}
		size, _ := os.ReadFile(filepath.Join(sysBlock, e.Name(), "size"))
		if s := strings.TrimSpace(string(size)); s == "" || s == "0" {
			return ""
		}
		return filepath.Join(devDir, e.Name())
	}
	return ""
}
