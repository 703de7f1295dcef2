//go:build integration

package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
)

// ConcurrentResult is one burst of n pods started at the same moment.
type ConcurrentResult struct {
	Handler string  `json:"handler"`
	N       int     `json:"n"`
	TotalMs float64 `json:"total_ms"`   // first RunPodSandbox sent → last one returned
	SlowMs  float64 `json:"slowest_ms"` // the slowest single RunPodSandbox
	// Per pod, averaged: the shim, plus QEMU and vhost-device-vsock for coco.
	PerPodMem Mem `json:"per_pod_mem"`
	// Per pod, averaged: the pod's own host processes without the VM
	// (HostMem: coco's shim + vhost-device-vsock, runc's shim + pause).
	PerPodHostMem Mem `json:"per_pod_host_mem"`
	// The whole machine's busy CPU time during the burst (/proc/stat: every
	// process, containerd and anything else running included), per pod, and
	// as a share of all cores over the burst: near 100% means the burst is
	// CPU-bound, so N pods cannot take less than N × CPUPerPodMs / cores.
	CPUPerPodMs float64 `json:"cpu_per_pod_ms"`
	CPUBusyPct  float64 `json:"cpu_busy_pct"`
}

// Concurrent starts n pods at once under handler, waits for all, samples
// the memory of each pod's processes, and removes them.
func Concurrent(ctx context.Context, env Env, handler string, coco bool, n int) (ConcurrentResult, error) {
	ctx, cancel := context.WithTimeout(ctx, PodTimeout)
	defer cancel()
	res := ConcurrentResult{Handler: handler, N: n}
	ids := make([]string, n)
	errs := make([]error, n)
	durs := make([]float64, n)
	var wg sync.WaitGroup
	busy0, all0 := cpuTicks()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.Now()
			cfg := harness.PodConfig(harness.PodOptions{Name: fmt.Sprintf("bench-conc-%s-%d-%d", handler, n, i), LogDir: env.LogDir})
			pod, err := env.CRI.RunPod(ctx, handler, cfg)
			durs[i] = msSince(t)
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = pod.ID
		}()
	}
	wg.Wait()
	res.TotalMs = msSince(t0)
	if busy1, all1 := cpuTicks(); all1 > all0 {
		res.CPUBusyPct = 100 * float64(busy1-busy0) / float64(all1-all0)
		res.CPUPerPodMs = float64(busy1-busy0) * 1000 / float64(clockTicks) / float64(n)
	}
	res.SlowMs = Summarize(durs).Max
	var total, host Mem
	for _, id := range ids {
		if id == "" {
			continue
		}
		var st struct {
			VMStateDir string `json:"vm_state_dir"`
			VMPID      int    `json:"vm_pid"`
		}
		if coco {
			if err := readJSON(filepath.Join(env.CocoStateDir, id, "sandbox.json"), &st); err == nil {
				if m, err := ReadMem(st.VMPID); err == nil {
					total = total.Add(m)
				}
			}
		}
		shim, helpers, guestShared := HostMem(coco, id, st.VMStateDir, st.VMPID)
		host = host.Add(shim).Add(helpers)
		total = total.Add(shim).Add(helpers).Add(guestShared)
	}
	per := func(m Mem) Mem {
		return Mem{RSSKiB: m.RSSKiB / float64(n), PSSKiB: m.PSSKiB / float64(n), AnonKiB: m.AnonKiB / float64(n)}
	}
	res.PerPodMem, res.PerPodHostMem = per(total), per(host)
	for i, id := range ids {
		if id == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := env.CRI.RemovePod(context.WithoutCancel(ctx), id); err != nil && errs[i] == nil {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	return res, explainTimeout(ctx, errors.Join(errs...))
}

// clockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux
// architecture Go runs on.
const clockTicks = 100

// cpuTicks reads the machine's busy and total CPU time from /proc/stat's
// "cpu" line (idle and iowait are not busy).
func cpuTicks() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}
