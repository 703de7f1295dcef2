//go:build linux

// Command testinit is PID 1 of the QEMU driver's boot tests: it loads the
// guest's kernel modules from the coco manifest (with guest-assets/kmod, as
// coco-agent does), then, unless the kernel command line says
// testinit.mode=silent, listens on vsock port 1024 and answers every
// connection with one line naming the guest kernel, then echoes. Other
// modes: exit (kernel panic), poweroff, flood (floods the serial console).
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/kmod"
)

const port = 1024

// floodLines is how many 72-byte lines mode "flood" writes (~560 KiB).
const floodLines = 8000

func main() {
	_ = os.MkdirAll("/proc", 0o555)
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		fatal("mount /proc: %v", err)
	}
	_ = os.MkdirAll("/sys", 0o555)
	if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		fatal("mount /sys: %v", err)
	}
	// mdlayher/vsock asks /dev/vsock for the local CID.
	_ = os.MkdirAll("/dev", 0o755)
	if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
		fatal("mount /dev: %v", err)
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	mode := "serve"
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "testinit.mode="); ok {
			mode = v
		}
	}
	start := time.Now()
	mods, err := kmod.ReadManifest(kmod.DefaultManifest)
	if err != nil {
		fatal("load modules: %v", err)
	}
	// TEE report drivers fail with ENODEV outside their TEE; these boots
	// have none (coco-agent loads them apart, too).
	_, mods = kmod.Take(mods, "sev_guest")
	if err := kmod.Load(mods); err != nil {
		fatal("load modules: %v", err)
	}
	fmt.Printf("testinit: modules loaded in %s, mode %s\n", time.Since(start).Round(time.Millisecond), mode)
	switch mode {
	case "silent":
		fmt.Println("testinit: not listening, as asked")
		sleepForever()
	case "exit":
		// PID 1 exiting panics the kernel ("Attempted to kill init").
		fmt.Println("testinit: exiting")
		os.Exit(3)
	case "poweroff":
		fmt.Println("testinit: powering off")
		unix.Sync()
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	case "flood":
		// A hostile guest's serial console: numbered lines, far more
		// than the host's console log cap, then power off.
		w := bufio.NewWriterSize(os.Stdout, 64<<10)
		for i := range floodLines {
			fmt.Fprintf(w, "testinit: flood %06d ................................................\n", i)
		}
		fmt.Fprintln(w, "testinit: flood done")
		w.Flush()
		unix.Sync()
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	release := unix.ByteSliceToString(u.Release[:])
	ln, err := vsock.Listen(port, nil)
	if err != nil {
		fatal("listen vsock %d: %v", port, err)
	}
	fmt.Printf("testinit: listening on vsock port %d\n", port)
	for {
		c, err := ln.Accept()
		if err != nil {
			fatal("accept: %v", err)
		}
		go serve(c, release)
	}
}

func serve(c net.Conn, release string) {
	defer c.Close()
	fmt.Fprintf(c, "hello from guest %s\n", release)
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err != io.EOF {
				fmt.Println("testinit: read:", err)
			}
			return
		}
		if line == "disks\n" {
			line = disks() + "\n"
		}
		if _, err := io.WriteString(c, line); err != nil {
			return
		}
	}
}

// disks lists the guest's virtio disks as "serial:ro" pairs (ro is 1 for
// read-only), sorted, so the host can see hot-plug and read-only work.
func disks() string {
	devs, _ := filepath.Glob("/sys/block/vd*")
	var out []string
	for _, d := range devs {
		serial, _ := os.ReadFile(filepath.Join(d, "serial"))
		ro, _ := os.ReadFile(filepath.Join(d, "ro"))
		out = append(out, strings.TrimSpace(string(serial))+":"+strings.TrimSpace(string(ro)))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// fatal reports on the console and powers off: PID 1 exiting would panic
// the kernel, which says less.
func fatal(format string, args ...any) {
	fmt.Printf("testinit: "+format+"\n", args...)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	sleepForever()
}

// sleepForever blocks PID 1 without tripping Go's "all goroutines are
// asleep" check (an exiting PID 1 panics the kernel).
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}
