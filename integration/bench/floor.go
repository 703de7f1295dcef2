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
			out = append(out, a, v)
			i++
		}
	}
	if !haveKernel {
		return nil, fmt.Errorf("bench: the pod's QEMU command line has no -kernel (firmware boot?): no bare-boot floor for it")
	}
	return append(out, "-initrd", floorInitrd, "-serial", "file:"+console), nil
}

var floorRE = regexp.MustCompile(`COCO-FLOOR init_ns=(\d+)`)

// FloorResult is one bare boot: wall time from exec to QEMU's exit and the
// guest's uptime when init ran.
type FloorResult struct {
	WallMs      float64
	GuestInitMs float64
}

// BareBoot runs argv (from FloorArgs) once and waits for the guest to
// power off.
func BareBoot(ctx context.Context, argv []string, console string) (FloorResult, error) {
	os.Remove(console)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return FloorResult{}, fmt.Errorf("bench: bare boot: %v: %s", err, out)
	}
	data, _ := os.ReadFile(console)
	m := floorRE.FindSubmatch(data)
	if m == nil {
		return FloorResult{}, fmt.Errorf("bench: bare boot: no COCO-FLOOR marker on the console; tail:\n%s", tailStr(string(data), 1500))
	}
	ns, _ := strconv.ParseFloat(string(m[1]), 64)
	return FloorResult{WallMs: float64(wall.Microseconds()) / 1000, GuestInitMs: ns / 1e6}, nil
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
