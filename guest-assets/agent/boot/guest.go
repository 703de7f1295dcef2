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
