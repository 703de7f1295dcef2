//go:build integration

// Command bench (`make bench`) starts one real containerd with containerd's
// runc shim and ours, and reports in one run, median and spread over -n
// pods: the phases of a coco pod start (host and guest clocks), the same pod
// through runc, a bare QEMU boot of the same kernel (the floor), shim and
// QEMU memory, agent round trip and ExecSync latency, and bursts of pods
// started at once. A plain table goes to stdout, the JSON to -out.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coco-runtime/coco/integration/bench"
	"github.com/coco-runtime/coco/integration/harness"
)

type options struct {
	runs        int
	warmup      int
	roundTrips  int
	concurrency []int
	concMemMiB  int
	out         string
	cocoConfig  string
	kernelArgs  string
	sandboxer   string
	netRuns     int
}

// cocoDevAssets are the guest asset keys of configuration-qemu-coco-dev.toml,
// for the bench's overlays: a config file overlays the defaults, not a class.
const cocoDevAssets = "initrd = \"initrd-dev.img\"\ntools_image = \"tools.erofs\"\n"

// sandboxerOption is the runtime entry's sandboxer value: containerd's
// default (a pause container) is the absence of the key.
func (o options) sandboxerOption() string {
	if o.sandboxer == "podsandbox" {
		return ""
	}
	return o.sandboxer
}

func main() {
	var o options
	var conc string
	flag.IntVar(&o.runs, "n", 5, "pods per handler (and bare boots) to take the median over")
	flag.IntVar(&o.warmup, "warmup", 1, "untimed pods per handler first (page cache, KVM probe cache)")
	flag.IntVar(&o.roundTrips, "roundtrips", 5, "ExecSync calls per pod (agent Health: 4x as many)")
	flag.StringVar(&conc, "concurrency", "1,4,8", "comma-separated burst sizes of pods started at once (empty: none)")
	flag.IntVar(&o.concMemMiB, "conc-memory", 256, "guest memory (MiB) of the pods in the bursts")
	flag.StringVar(&o.out, "out", "build/bench", "results directory (JSON report)")
	flag.StringVar(&o.cocoConfig, "config", "", "config file of the coco handler (default: configs/configuration-qemu-coco-dev.toml)")
	flag.StringVar(&o.kernelArgs, "kernel-params", "", "extra guest kernel parameters for the coco pods (an overlay config; not with -config): for A/B runs")
	flag.StringVar(&o.sandboxer, "sandboxer", "shim", `containerd sandboxer of the coco handler: "shim" (containerd's sandbox API, as the README configures it) or "podsandbox" (a pause container through the task API, containerd's default)`)
	flag.IntVar(&o.netRuns, "net", 1, "pod-to-pod measurements per handler (two pods each; 0: none)")
	flag.Parse()
	if o.sandboxer != "shim" && o.sandboxer != "podsandbox" {
		fmt.Fprintf(os.Stderr, "bench: -sandboxer %q: want \"shim\" or \"podsandbox\"\n", o.sandboxer)
		os.Exit(2)
	}
	for _, f := range strings.Split(conc, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -concurrency: %q is not a positive number\n", f)
			os.Exit(2)
		}
		o.concurrency = append(o.concurrency, n)
	}
	if o.runs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -n must be at least 1")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench %s: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	repo, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	guest := harness.GuestDir(repo)
	if err := harness.CheckGuestAssets(guest); err != nil {
		return err
	}
	out := o.out
	if !filepath.IsAbs(out) {
		out = filepath.Join(repo, out)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "coco-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// Overlays of the defaults with the coco-dev assets; -kernel-params
	// goes into both the coco and the burst overlay.
	overlay := func(name, extra string) (string, error) {
		if o.kernelArgs != "" {
			extra += fmt.Sprintf("kernel_params = %q\n", o.kernelArgs)
		}
		path := filepath.Join(work, name)
		body := "[hypervisor]\n" + cocoDevAssets + extra + "[tee]\nkind = \"none\"\n"
		return path, os.WriteFile(path, []byte(body), 0o644)
	}
	// The burst pods get less memory and a longer boot timeout: with two
	// cores and TCG, eight guests booting at once share the CPU eightfold.
	burstCfg, err := overlay("configuration-bench-burst.toml", fmt.Sprintf("memory_mib = %d\nboot_timeout = \"300s\"\n", o.concMemMiB))
	if err != nil {
		return err
	}
	cocoCfg := o.cocoConfig
	switch {
	case cocoCfg != "" && o.kernelArgs != "":
		return fmt.Errorf("-config and -kernel-params: give one (put kernel_params in the config file)")
	case cocoCfg == "" && o.kernelArgs != "":
		if cocoCfg, err = overlay("configuration-bench.toml", ""); err != nil {
			return err
		}
	case cocoCfg == "":
		cocoCfg = harness.CocoDevConfig(repo)
	}
	logf("building containerd, ctr, the runc shim (cached) and our shim")
	bins, err := harness.BuildAll(ctx, repo, logf)
	if err != nil {
		return err
	}
	if bins.CocoShimErr != nil {
		return bins.CocoShimErr
	}
	logf("starting containerd")
	ctrd, err := harness.Start(ctx, harness.Options{
		Repo: repo, Bins: bins,
		Handlers: []harness.Handler{
			harness.RuncHandler(),
			harness.CocoHandler("coco", cocoCfg, o.sandboxerOption()),
			harness.CocoHandler("coco-burst", burstCfg, o.sandboxerOption()),
		},
		Env: []string{"COCO_SHARE_DIR=" + guest}, Logf: logf,
	})
	if err != nil {
		return err
	}
	defer func() {
		logf("tearing down")
		if err := ctrd.Stop(context.Background()); err != nil {
			logf("teardown: %v", err)
		}
	}()
	env := bench.Env{CRI: ctrd.CRI, CocoStateDir: "/run/coco", LogDir: filepath.Join(ctrd.Root, "logs"), RoundTrips: o.roundTrips}

	rep := &bench.Report{Runs: o.runs, Meta: meta(guest, o), Ratios: map[string]float64{}}
	rep.Meta["config"] = cocoCfg
	if o.kernelArgs != "" {
		rep.Meta["config"] += fmt.Sprintf(" (coco-dev + kernel_params %q)", o.kernelArgs)
	}
	rep.Meta["config"] += fmt.Sprintf(", sandboxer %s", o.sandboxer)
	var coco, runc, floor, mem bench.Series
	var qemuArgv, floorArgv []string
	var podOverFloor []float64 // per run: RunPodSandbox / the bare boot after it
	floorConsole := filepath.Join(work, "floor-console.log")
	for i := -o.warmup; i < o.runs; i++ {
		tag := fmt.Sprintf("run %d/%d", i+1, o.runs)
		if i < 0 {
			tag = "warm-up"
		}
		logf("%s: coco pod", tag)
		cs, err := bench.MeasurePod(ctx, env, "coco", true, fmt.Sprintf("bench-coco-%d", i+o.warmup))
		if err != nil {
			// A failed pod is reported and left out; the run goes on, so
			// one flaky start does not cost the other measurements.
			logf("%s: coco pod failed: %v", tag, err)
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: coco pod: %v", tag, err))
			if ctx.Err() != nil {
				return err
			}
			continue
		}
		logf("%s: runc pod", tag)
		rs, err := bench.MeasurePod(ctx, env, "runc", false, fmt.Sprintf("bench-runc-%d", i+o.warmup))
		if err != nil {
			logf("%s: runc pod failed: %v", tag, err)
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: runc pod: %v", tag, err))
			if ctx.Err() != nil {
				return err
			}
			continue
		}
		for _, e := range append(cs.ExecErrors, rs.ExecErrors...) {
			rep.Errors = append(rep.Errors, e)
			logf("%s", e)
		}
		if floorArgv == nil && len(cs.QEMUArgv) > 0 {
			qemuArgv = cs.QEMUArgv
			if floorArgv, err = floorSetup(ctx, repo, work, qemuArgv, floorConsole); err != nil {
				return err
			}
			rep.Meta["floor argv"] = strings.Join(floorArgv, " ")
			rep.Meta["qemu argv"] = strings.Join(qemuArgv, " ")
		}
		if i < 0 {
			continue
		}
		bench.AddCoco(&coco, cs)
		bench.AddRunc(&runc, rs)
		mem.Add("coco shim RSS", cs.ShimMem.RSSKiB)
		mem.Add("coco shim PSS", cs.ShimMem.PSSKiB)
		mem.Add("coco shim anonymous", cs.ShimMem.AnonKiB)
		mem.Add("runc shim RSS (containerd-shim-runc-v2)", rs.ShimMem.RSSKiB)
		mem.Add("runc shim PSS (containerd-shim-runc-v2)", rs.ShimMem.PSSKiB)
		mem.Add("runc shim anonymous", rs.ShimMem.AnonKiB)
		mem.Add("QEMU RSS", cs.VMMMem.RSSKiB)
		mem.Add("QEMU PSS", cs.VMMMem.PSSKiB)
		mem.Add("QEMU anonymous (TCG code cache, heap; guest RAM is a shared memfd)", cs.VMMMem.AnonKiB)
		mem.Add("vhost-device-vsock RSS", cs.VsockMem.RSSKiB)
		mem.Add("vhost-device-vsock PSS", cs.VsockMem.PSSKiB)
		rep.Samples = append(rep.Samples, cs, rs)
		// The bare boot right after the pods it is the floor of: the
		// machine is shared, and its speed drifts over a run.
		if floorArgv != nil {
			logf("%s: bare QEMU boot (floor)", tag)
			fr, err := bench.BareBoot(ctx, floorArgv, floorConsole)
			if err != nil {
				return err
			}
			floor.Add(bench.FloorInit, fr.InitMs)
			floor.Add(bench.FloorPreClock, fr.PreClockMs)
			floor.Add(bench.FloorGuestInit, fr.GuestInitMs)
			floor.Add(bench.FloorExit, fr.ExitMs)
			podOverFloor = append(podOverFloor, cs.RunPodMs/fr.InitMs)
		}
	}

	if len(rep.Samples) == 0 {
		return fmt.Errorf("no pod pair succeeded:\n%s\ncontainerd log tail:\n%s", strings.Join(rep.Errors, "\n"), ctrd.LogTail(3000))
	}
	var netSamples []bench.NetSample
	for i := 0; i < o.netRuns; i++ {
		for _, h := range []string{"coco", "runc"} {
			logf("pod to pod %d/%d: %s", i+1, o.netRuns, h)
			ns, err := bench.PodToPod(ctx, env, h, fmt.Sprintf("bench-net-%s-%d", h, i))
			if err != nil {
				rep.Errors = append(rep.Errors, fmt.Sprintf("pod to pod %s: %v", h, err))
				continue
			}
			netSamples = append(netSamples, ns)
		}
	}
	rep.Network = bench.NetStats(netSamples)
	for _, n := range o.concurrency {
		for _, h := range []struct {
			name string
			coco bool
		}{{"coco-burst", true}, {"runc", false}} {
			logf("burst of %d %s pods", n, h.name)
			cr, err := bench.Concurrent(ctx, env, h.name, h.coco, n)
			if err != nil {
				rep.Errors = append(rep.Errors, fmt.Sprintf("burst %d %s: %v", n, h.name, err))
			}
			rep.Concurrent = append(rep.Concurrent, cr)
		}
	}

	rep.Coco, rep.Runc, rep.Floor, rep.Memory = coco.Stats(), runc.Stats(), floor.Stats(), mem.Stats()
	cm, rm := bench.Median(rep.Coco, bench.PodTotal), bench.Median(rep.Runc, bench.PodTotal)
	rep.Ratios["RunPodSandbox coco/runc"] = bench.Ratio(cm, rm)
	rep.Ratios["first output coco/runc (end to end)"] = bench.Ratio(bench.Median(rep.Coco, bench.ToOutput), bench.Median(rep.Runc, bench.ToOutput))
	rep.Ratios["pod ready / bare boot (RunPodSandbox / exec → init running)"] = bench.Ratio(cm, bench.Median(rep.Floor, bench.FloorInit))
	if len(podOverFloor) > 0 {
		rep.Ratios["pod ready / bare boot, paired per run (median)"] = bench.Summarize(podOverFloor).Median
	}
	rep.Ratios["shim PSS coco/runc"] = bench.Ratio(bench.Median(rep.Memory, "coco shim PSS"), bench.Median(rep.Memory, "runc shim PSS (containerd-shim-runc-v2)"))
	rep.Ratios["ExecSync coco/runc"] = bench.Ratio(bench.Median(rep.Coco, bench.ExecSync), bench.Median(rep.Runc, bench.ExecSync))

	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	name := filepath.Join(out, "bench-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	if err := os.WriteFile(name, data, 0o644); err != nil {
		return err
	}
	os.Remove(filepath.Join(out, "latest.json"))
	os.Symlink(filepath.Base(name), filepath.Join(out, "latest.json"))
	rep.WriteTable(os.Stdout)
	fmt.Printf("\nJSON: %s\n", name)
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d call(s) failed (listed under the table)", len(rep.Errors))
	}
	return nil
}

// floorSetup builds the bare boot's initrd and command line from the pod's
// QEMU command line.
func floorSetup(ctx context.Context, repo, work string, qemuArgv []string, console string) ([]string, error) {
	img, err := bench.FloorInitrd(ctx, repo, work)
	if err != nil {
		return nil, err
	}
	return bench.FloorArgs(qemuArgv, img, console)
}

func meta(guest string, o options) map[string]string {
	m := map[string]string{
		"date":   time.Now().UTC().Format(time.RFC3339),
		"runs":   fmt.Sprintf("%d per handler (+%d warm-up), bursts at %d MiB guest memory", o.runs, o.warmup, o.concMemMiB),
		"config": "configs/configuration-qemu-coco-dev.toml (coco), burst overlay memory/boot_timeout",
	}
	uname, _ := exec.Command("uname", "-r").Output()
	m["host"] = fmt.Sprintf("%d CPUs, kernel %s, %s", runtime.NumCPU(), strings.TrimSpace(string(uname)), cpuModel())
	if v, err := exec.Command("qemu-system-x86_64", "--version").Output(); err == nil {
		m["qemu"] = strings.SplitN(string(v), "\n", 2)[0]
	}
	var sizes []string
	for _, f := range []string{"vmlinux", "initrd.img", "initrd-dev.img", "tools.erofs", "coco-agent"} {
		if fi, err := os.Stat(filepath.Join(guest, f)); err == nil {
			sizes = append(sizes, fmt.Sprintf("%s %.1f MB", f, float64(fi.Size())/1e6))
		}
	}
	m["guest"] = strings.Join(sizes, ", ")
	if _, err := os.Stat("/dev/kvm"); err == nil {
		m["accel"] = "auto (a KVM probe decides; see qemu argv in the JSON)"
	} else {
		m["accel"] = "tcg (no /dev/kvm)"
	}
	return m
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
