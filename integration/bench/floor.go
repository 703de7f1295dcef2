//go:build integration

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/coco-runtime/coco/guest-assets/initrd"
	"github.com/coco-runtime/coco/hypervisor/qemu"
)

// FloorInitrd builds integration/bench/floorinit and a one-file initrd
// around it in dir, and returns the initrd's path.
func FloorInitrd(ctx context.Context, repo, dir string) (string, error) {
	bin := filepath.Join(dir, "floorinit")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./integration/bench/floorinit")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: build floorinit: %v\n%s", err, out)
	}
	initEntry, err := initrd.File("/init", bin, 0o755)
	if err != nil {
		return "", err
	}
	entries := []initrd.Entry{
		initrd.Dir("/dev", 0o755),
		// Without /dev/console in the initramfs the kernel starts init
		// with no stdout and the marker would be lost.
		initrd.CharDevice("/dev/console", 0o600, 5, 1),
		initEntry,
	}
	img := filepath.Join(dir, "floor-initrd.img")
	f, err := os.Create(img)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := initrd.Write(f, entries, "none"); err != nil {
		return "", err
	}
	return img, f.Close()
}

// FloorArgs turns the pod's own QEMU command line into the bare boot's:
// the same binary, machine, accelerator, CPU, memory, kernel and kernel
// command line, but only the floor initrd, a console file and no devices.
func FloorArgs(podArgv []string, floorInitrd, console string) ([]string, error) {
	if len(podArgv) == 0 {
		return nil, fmt.Errorf("bench: empty QEMU command line")
	}
	keep := map[string]bool{"-machine": true, "-accel": true, "-cpu": true, "-smp": true, "-m": true, "-kernel": true, "-append": true}
	out := []string{podArgv[0], "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"}
	haveKernel := false
	for i := 1; i+1 < len(podArgv); i++ {
		a, v := podArgv[i], podArgv[i+1]
		switch {
		case keep[a]:
			out = append(out, a, v)
			haveKernel = haveKernel || a == "-kernel"
			i++
		case a == "-object" && strings.HasPrefix(v, "memory-backend-"):
			// The pod's memory file (qemu.OpenRAM) is BareBoot's fd 3.
			out = append(out, a, ramFDRE.ReplaceAllString(v, "${1}3"))
			i++
		}
	}
	if !haveKernel {
		return nil, fmt.Errorf("bench: the pod's QEMU command line has no -kernel (firmware boot?): no bare-boot floor for it")
	}
	out = append(out, "-initrd", floorInitrd, "-serial", "file:"+console)
	if strings.Contains(filepath.Base(podArgv[0]), "x86_64") {
		// SeaBIOS (and qboot) write their log to the debug port 0x402:
		// its first byte tells QEMU's own start from the firmware's run.
		out = append(out, "-chardev", "file,id=fwlog,path="+firmwareLog(console),
			"-device", "isa-debugcon,iobase=0x402,chardev=fwlog")
	}
	return out, nil
}

// firmwareLog is where the bare boot's firmware log goes, beside the console.
func firmwareLog(console string) string { return console + ".firmware" }

var (
	floorRE = regexp.MustCompile(`COCO-FLOOR init_ns=(\d+)`)
	ramFDRE = regexp.MustCompile(`(mem-path=/proc/self/fd/)\d+`)
)

// FloorResult is one bare boot, timed by the host from QEMU's exec: until
// init's marker showed on the console (the guest is up: the floor), until
// QEMU exited, and the guest's own uptime when init ran.
type FloorResult struct {
	InitMs      float64 // exec → init's marker seen on the console
	ExitMs      float64 // exec → QEMU exited after init powered off
	GuestInitMs float64 // guest clock: kernel start → init
	PreClockMs  float64 // exec → guest clock zero: QEMU setup + the kernel before its clock
	// FirmwareMs is exec → the firmware's first log byte (x86 only; 0
	// when the firmware wrote none): QEMU's own start, the ELF loaded
	// into guest memory included.
	FirmwareMs float64
}

// BareBoot runs argv (from FloorArgs) once and waits for the guest to
// power off, watching the console for init's marker meanwhile.
func BareBoot(ctx context.Context, argv []string, console string) (FloorResult, error) {
	os.Remove(console)
	os.Remove(firmwareLog(console))
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if strings.Contains(strings.Join(argv, " "), "mem-path=/proc/self/fd/3") {
		ram, err := floorRAM(argv, filepath.Dir(console))
		if err != nil {
			return FloorResult{}, err
		}
		defer ram.Close()
		cmd.ExtraFiles = []*os.File{ram}
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return FloorResult{}, fmt.Errorf("bench: bare boot: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var seen, firmware time.Time
	var err error
	for poll := time.NewTicker(time.Millisecond); ; {
		select {
		case err = <-exited:
		case <-poll.C:
			if firmware.IsZero() {
				if fi, statErr := os.Stat(firmwareLog(console)); statErr == nil && fi.Size() > 0 {
					firmware = time.Now()
				}
			}
			if seen.IsZero() {
				if data, _ := os.ReadFile(console); floorRE.Match(data) {
					seen = time.Now()
				}
			}
			continue
		}
		poll.Stop()
		break
	}
	exit := time.Since(start)
	if err != nil {
		return FloorResult{}, fmt.Errorf("bench: bare boot: %v: %s", err, out.String())
	}
	data, _ := os.ReadFile(console)
	m := floorRE.FindSubmatch(data)
	if m == nil {
		return FloorResult{}, fmt.Errorf("bench: bare boot: no COCO-FLOOR marker on the console; tail:\n%s", tailStr(string(data), 1500))
	}
	if seen.IsZero() { // marker and exit within one poll
		seen = time.Now()
	}
	ns, _ := strconv.ParseFloat(string(m[1]), 64)
	init := seen.Sub(start)
	r := FloorResult{
		InitMs:      ms(init),
		ExitMs:      ms(exit),
		GuestInitMs: ns / 1e6,
		PreClockMs:  ms(init) - ns/1e6,
	}
	if !firmware.IsZero() {
		r.FirmwareMs = ms(firmware.Sub(start))
	}
	return r, nil
}

// floorRAM makes the bare boot's guest memory the way the shim makes the
// pod's, so both boot on the same kind of pages.
func floorRAM(argv []string, dir string) (*os.File, error) {
	for i, a := range argv[:len(argv)-1] {
		if a != "-m" {
			continue
		}
		mib, err := strconv.ParseUint(strings.TrimSuffix(argv[i+1], "M"), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("bench: bare boot: -m %q: want <MiB>M", argv[i+1])
		}
		f, hugeErr := qemu.OpenRAM(dir, uint32(mib))
		if f == nil {
			return nil, fmt.Errorf("bench: bare boot: %w", hugeErr)
		}
		return f, nil // without huge pages if the pod had none either
	}
	return nil, fmt.Errorf("bench: bare boot: no -m in %v", argv)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
