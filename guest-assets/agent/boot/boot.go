//go:build linux

// Package boot does what PID 1 must do before the agent serves: make the
// initramfs root pivotable, mount the kernel filesystems, enable cgroup
// controllers, and finally power the VM off.
package boot

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Boottime reads CLOCK_BOOTTIME in nanoseconds: the guest's time since the
// kernel started, unaffected by setting the wall clock.
func Boottime() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}

// SwitchRoot makes "/" a mount with a parent. The initramfs root cannot be
// pivoted away, and runc pivot_roots into every container; a bind mount of
// the same tree moved over "/" (as switch_root does, without copying) can.
func SwitchRoot() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return fmt.Errorf("statfs /: %w", err)
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return nil // booted from a real root filesystem
	}
	const newRoot = "/.coco-root"
	if err := os.Mkdir(newRoot, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.Mount("/", newRoot, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind / on %s: %w", newRoot, err)
	}
	if err := unix.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// The bind shows the same tree, including the now empty mountpoint.
	os.Remove(newRoot)
	return nil
}

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
}

// earlyMounts are the kernel filesystems the agent, runc and containers need.
var earlyMounts = []mountSpec{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", 0o755},
	{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "nsdelegate", 0o555},
}

// MountEarly mounts the kernel filesystems; one already mounted (EBUSY) is
// fine.
func MountEarly() error {
	for _, m := range earlyMounts {
		if err := os.MkdirAll(m.target, m.mode); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	links := map[string]string{"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2"}
	for l, t := range links {
		if err := os.Symlink(t, l); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

// OpenConsole points stdin, stdout and stderr at /dev/console, in case the
// kernel could not (no /dev/console in the initramfs).
func OpenConsole() {
	f, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for fd := 0; fd <= 2; fd++ {
		unix.Dup3(int(f.Fd()), fd, 0)
	}
	f.Close()
}

// EnableControllers delegates every available cgroup v2 controller to child
// cgroups, where runc puts containers.
func EnableControllers(root string) error {
	b, err := os.ReadFile(root + "/cgroup.controllers")
	if err != nil {
		return err
	}
	var enable []string
	for _, c := range strings.Fields(string(b)) {
		enable = append(enable, "+"+c)
	}
	if len(enable) == 0 {
		return nil
	}
	if err := os.WriteFile(root+"/cgroup.subtree_control", []byte(strings.Join(enable, " ")), 0); err != nil {
		return fmt.Errorf("enable cgroup controllers %v: %w", enable, err)
	}
	return nil
}

// UptimeHook stamps every agent log entry with the guest clock (seconds
// since the kernel started), so the console reads as one boot time line
// with the kernel's own messages.
type UptimeHook struct{}

func (UptimeHook) Levels() []logrus.Level { return logrus.AllLevels }

func (UptimeHook) Fire(e *logrus.Entry) error {
	e.Data["uptime"] = fmt.Sprintf("%.3f", float64(Boottime())/1e9)
	return nil
}

// Log writes a line to the console and the kernel log.
func Log(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stderr, "coco-agent: %s\n", msg)
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		fmt.Fprintf(f, "<4>coco-agent: %s\n", msg)
		f.Close()
	}
}

// PowerOff says why on the console, kills every other process, syncs and
// powers the VM off. It does not return.
func PowerOff(reason string) {
	Log("powering off: %s", reason)
	unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Still here: power-off is not possible (or not PID 1); restart is the
	// next best way to end the VM (QEMU -no-reboot exits on it).
	Log("power off failed: %v; rebooting", err)
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	for {
		time.Sleep(time.Hour)
	}
}

// MountConfigFS mounts configfs for configfs-tsm attestation reports (TEE
// guests on Linux 6.7+). Kernels without configfs simply have no reports:
// the error is for the log only.
func MountConfigFS() error {
	const target = "/sys/kernel/config"
	err := unix.Mount("configfs", target, "configfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err == nil || err == unix.EBUSY {
		return nil
	}
	return fmt.Errorf("mount configfs on %s: %w", target, err)
}
