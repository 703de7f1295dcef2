//go:build linux

// Command testinit is a stand-in PID 1 for boot tests of the guest kernel:
// it loads the initrd's modules through guest-assets/kmod, checks that the
// drivers the agent relies on are there, prints one marker line with the
// guest's uptime, and powers the VM off so QEMU exits by itself.
//
// Marker (one line on the console):
//
//	COCO-TESTINIT ok boot_ms=<uptime at start> modules_ms=<load time> fs=erofs,overlay vsock=ok [disk=vda] [builtin=ok tsm=ok]
//	COCO-TESTINIT fail <reason>
package main

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/kmod"
)

// Marker starts the line the boot test looks for.
const Marker = "COCO-TESTINIT"

func main() {
	start := uptime()
	msg, err := check()
	if err != nil {
		fmt.Printf("%s fail %v\n", Marker, err)
	} else {
		fmt.Printf("%s ok boot_ms=%d %s\n", Marker, start.Milliseconds(), msg)
	}
	os.Stdout.Sync()
	unix.Sync()
	// PID 1 must not exit (the kernel would panic); power off instead.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Printf("%s fail reboot: %v\n", Marker, err)
	}
	select {}
}

// uptime reads CLOCK_BOOTTIME: time since the kernel started, no /proc needed.
func uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return -1
	}
	return time.Duration(ts.Nano())
}

func check() (string, error) {
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("mount /proc: %w", err)
	}
	t0 := uptime()
	mods, err := kmod.ReadManifest(kmod.DefaultManifest)
	if err != nil {
		return "", err
	}
	// The SNP report driver fails with ENODEV outside an SNP guest; the
	// agent loads it only in a TEE guest and tolerates that, so skip it here.
	_, mods = kmod.Take(mods, "sev_guest")
	if err := kmod.Load(mods); err != nil {
		return "", err
	}
	loadMs := (uptime() - t0).Milliseconds()

	fsList, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return "", err
	}
	for _, want := range []string{"erofs", "overlay"} {
		if !strings.Contains(string(fsList), "\t"+want+"\n") {
			return "", fmt.Errorf("file system %s not registered after loading modules", want)
		}
	}
	// Listening on a vsock port is what the agent does first; it needs the
	// vsock core module (a transport is only needed to connect).
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("vsock socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: 1024}); err != nil {
		return "", fmt.Errorf("vsock bind :1024: %w", err)
	}
	msg := fmt.Sprintf("modules_ms=%d fs=erofs,overlay vsock=ok", loadMs)
	// The kernel passes unknown name=value parameters to init's environment:
	// cocotest_disk=vda asks to check that a virtio-blk disk came up.
	if disk := os.Getenv("cocotest_disk"); disk != "" {
		if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return "", fmt.Errorf("mount /sys: %w", err)
		}
		if _, err := waitFor("/sys/block/"+disk, 5*time.Second); err != nil {
			return "", fmt.Errorf("virtio-blk disk %s did not appear: %w", disk, err)
		}
		msg += " disk=" + disk
	}
	// cocotest_builtin=1: the kernel is ours (GUEST_KERNEL=own), checked
	// from the inside: configfs-tsm is there and the running config has the
	// TEE guest drivers built in and no modules.
	if os.Getenv("cocotest_builtin") == "1" {
		if err := checkBuiltin(); err != nil {
			return "", err
		}
		msg += " builtin=ok tsm=ok"
	}
	return msg, nil
}

// builtinWant are options the running kernel must have built in.
var builtinWant = []string{
	"CONFIG_TSM_REPORTS=y", "CONFIG_SEV_GUEST=y", "CONFIG_AMD_MEM_ENCRYPT=y",
	"CONFIG_TDX_GUEST_DRIVER=y", "CONFIG_INTEL_TDX_GUEST=y",
	"CONFIG_VIRTIO_VSOCKETS=y", "CONFIG_VIRTIO_BLK=y", "CONFIG_EROFS_FS=y", "CONFIG_OVERLAY_FS=y",
	"# CONFIG_MODULES is not set",
}

func checkBuiltin() error {
	if _, err := os.Stat("/sys/kernel"); err != nil {
		if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount /sys: %w", err)
		}
	}
	if err := unix.Mount("configfs", "/sys/kernel/config", "configfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount configfs on /sys/kernel/config: %w (CONFIG_CONFIGFS_FS)", err)
	}
	if fi, err := os.Stat("/sys/kernel/config/tsm/report"); err != nil || !fi.IsDir() {
		return fmt.Errorf("configfs-tsm: /sys/kernel/config/tsm/report: %v (CONFIG_TSM_REPORTS)", err)
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return fmt.Errorf("running config: %w (CONFIG_IKCONFIG_PROC)", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("/proc/config.gz: %w", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return fmt.Errorf("/proc/config.gz: %w", err)
	}
	lines := strings.Split(string(raw), "\n")
	for _, want := range builtinWant {
		if !slices.Contains(lines, want) {
			return fmt.Errorf("/proc/config.gz lacks %q", want)
		}
	}
	for _, l := range lines {
		if strings.HasSuffix(l, "=m") {
			return fmt.Errorf("/proc/config.gz has a module: %s", l)
		}
	}
	return nil
}

// waitFor polls for path: device probing finishes asynchronously.
func waitFor(path string, limit time.Duration) (os.FileInfo, error) {
	deadline := time.Now().Add(limit)
	for {
		fi, err := os.Stat(path)
		if err == nil || time.Now().After(deadline) {
			return fi, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
