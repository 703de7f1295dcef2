//go:build linux

package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SysCPU is where the kernel lists and onlines CPUs.
const SysCPU = "/sys/devices/system/cpu"

// OnlineCPUs brings up the vCPUs the kernel left offline at boot and
// returns the ones it onlined. Under TCG the shim boots a multi-vCPU guest
// with maxcpus=1: bringing up a second vCPU is ~100-160 ms of guest time
// there (TCG has no constant TSC, so the new CPU calibrates its delay loop
// against the timer, and each CPU's MTRR set-up stops every vCPU), spent
// on the pod's critical path before init. Onlined here, after the agent
// serves, it overlaps with the host's connect and SetupSandbox instead.
// The pod's vCPUs are its resources, so every present CPU goes online;
// root is the sysfs CPU directory (SysCPU; tests use a temp dir).
func OnlineCPUs(root string) ([]int, error) {
	present, err := readCPUList(filepath.Join(root, "present"))
	if err != nil {
		return nil, err
	}
	online, err := readCPUList(filepath.Join(root, "online"))
	if err != nil {
		return nil, err
	}
	up := map[int]bool{}
	for _, c := range online {
		up[c] = true
	}
	var done []int
	var errs []error
	for _, c := range present {
		if up[c] {
			continue
		}
		// cpu0 has no online file on x86 (it cannot go offline), but it
		// is always online, so it never gets here. One vCPU that will not
		// come up does not keep the others down.
		p := filepath.Join(root, fmt.Sprintf("cpu%d", c), "online")
		if err := os.WriteFile(p, []byte("1"), 0); err != nil {
			errs = append(errs, fmt.Errorf("online cpu%d: %w", c, err))
			continue
		}
		done = append(done, c)
	}
	return done, errors.Join(errs...)
}

func readCPUList(path string) ([]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cpus, err := ParseCPUList(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cpus, nil
}

// ParseCPUList parses the kernel's CPU list format ("0", "0-3,5", "" for
// none), as in /sys/devices/system/cpu/online.
func ParseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("bad CPU list %q", s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad CPU list %q", s)
			}
		}
		// The kernel caps CPUs at NR_CPUS (64 in ours, 8192 at most).
		if b >= 8192 {
			return nil, fmt.Errorf("bad CPU list %q: CPU %d", s, b)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
