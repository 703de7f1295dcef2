//go:build integration

// Command bench (`make bench`) starts one real containerd with containerd's
// runc shim and ours, and reports in one run, median and spread over -n
// pods: the phases of a coco pod start (host and guest clocks), the same pod
// through runc, a bare QEMU boot of the same kernel (the floor), shim and
// QEMU memory, agent round trip and ExecSync latency, and bursts of pods
// started at once. With -generic-guest it also starts every coco pod and
// bare boot a second time with the guest assets of Debian's generic kernel,
// alternating which goes first, so the two kernels are compared within the
// same run. A plain table goes to stdout, the JSON to -out.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

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
	variant     string // TOML appended to the coco class for the variant pod
	variantName string
	guest       string
	generic     string
	sandboxer   string
	netRuns     int
}

// classOverlay returns the text of a runtime class file with the [hypervisor]
// keys in set replaced (or added): a config file overlays the defaults, not
// a class, so the bench's overlays start from the coco-dev class's own text
// (its assets, its vCPU count) rather than repeating it.
func classOverlay(class string, set map[string]string) string {
	var out []string
	section := ""
	for _, line := range strings.Split(class, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			section = t
		}
		if section == "[hypervisor]" {
			if k, _, ok := strings.Cut(t, "="); ok && !strings.HasPrefix(t, "#") {
				if _, replaced := set[strings.TrimSpace(k)]; replaced {
					continue
				}
			}
		}
		out = append(out, line)
		if t == "[hypervisor]" {
			for _, k := range sortedKeys(set) {
				out = append(out, fmt.Sprintf("%s = %s", k, set[k]))
			}
		}
	}
	return strings.Join(out, "\n")
}

// mergeTOML lays the tables and keys of overlay over base's, so -variant
// can set a key of a table the class file already has.
func mergeTOML(base []byte, overlay string) ([]byte, error) {
	var b, o map[string]any
	if err := toml.Unmarshal(base, &b); err != nil {
		return nil, err
	}
	if err := toml.Unmarshal([]byte(overlay), &o); err != nil {
		return nil, err
	}
	var merge func(dst, src map[string]any)
	merge = func(dst, src map[string]any) {
		for k, v := range src {
			sub, isTable := v.(map[string]any)
			if d, ok := dst[k].(map[string]any); ok && isTable {
				merge(d, sub)
				continue
			}
			dst[k] = v
		}
	}
	merge(b, o)
	var out bytes.Buffer
	err := toml.NewEncoder(&out).Encode(b)
	return out.Bytes(), err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

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
	flag.StringVar(&o.variant, "variant", `network = {interfaces = "none"}`, "TOML laid over the coco pod's class for a second pod in every run (handler coco-variant, alternating which goes first); the table shows coco − variant paired per run: an A/B of any configuration key")
	flag.StringVar(&o.variantName, "variant-name", "without a network", "what -variant changes, for the table")
	flag.StringVar(&o.guest, "guest", "build/guest", "guest assets of the coco pods (make guest-assets)")
	flag.StringVar(&o.generic, "generic-guest", "", "guest assets built with Debian's generic kernel (make guest-assets GUEST_KERNEL=debian GUEST_OUT=...): every coco pod and bare boot runs with these too, side by side; empty: none")
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
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(repo, p)
	}
	guest, generic := abs(o.guest), abs(o.generic)
	for _, g := range []string{guest, generic} {
		if g == "" {
			continue
		}
		if err := harness.CheckGuestAssets(g); err != nil {
			return err
		}
	}
	if generic != "" && o.cocoConfig != "" {
		return fmt.Errorf("-config and -generic-guest: the generic kernel's handler is the coco-dev class with its assets; give one")
	}
	classText, err := os.ReadFile(harness.CocoDevConfig(repo))
	if err != nil {
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

	// Overlays of the coco-dev class; -kernel-params goes into all of them.
	overlay := func(name string, set map[string]string) (string, error) {
		if o.kernelArgs != "" {
			set["kernel_params"] = fmt.Sprintf("%q", o.kernelArgs)
		}
		path := filepath.Join(work, name)
		return path, os.WriteFile(path, []byte(classOverlay(string(classText), set)), 0o644)
	}
	// The burst pods get less memory and a longer boot timeout: with two
	// cores and TCG, eight guests booting at once share the CPU eightfold.
	burstCfg, err := overlay("configuration-bench-burst.toml", map[string]string{"memory_mib": fmt.Sprint(o.concMemMiB), "boot_timeout": `"300s"`})
	if err != nil {
		return err
	}
	cocoCfg := o.cocoConfig
	switch {
	case cocoCfg != "" && o.kernelArgs != "":
		return fmt.Errorf("-config and -kernel-params: give one (put kernel_params in the config file)")
	case cocoCfg == "" && o.kernelArgs != "":
		if cocoCfg, err = overlay("configuration-bench.toml", map[string]string{}); err != nil {
			return err
		}
	case cocoCfg == "":
		cocoCfg = harness.CocoDevConfig(repo)
	}
	// The generic kernel's handler: the same class with absolute asset
	// paths (COCO_SHARE_DIR, which names our assets, wins over share_dir).
	var genericCfg string
	if generic != "" {
		set := map[string]string{}
		for k, f := range map[string]string{"kernel": "vmlinux", "initrd": "initrd-dev.img", "tools_image": "tools.erofs"} {
			set[k] = fmt.Sprintf("%q", filepath.Join(generic, f))
		}
		if genericCfg, err = overlay("configuration-bench-generic.toml", set); err != nil {
			return err
		}
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
	handlers := []harness.Handler{
		harness.RuncHandler(),
		harness.CocoHandler("coco", cocoCfg, o.sandboxerOption()),
		harness.CocoHandler("coco-burst", burstCfg, o.sandboxerOption()),
	}
	if genericCfg != "" {
		handlers = append(handlers, harness.CocoHandler("coco-generic", genericCfg, o.sandboxerOption()))
	}
	// The same class with -variant appended (by default without a NIC:
	// the network's share of a pod start), measured in the same run.
	base, err := os.ReadFile(cocoCfg)
	if err != nil {
		return err
	}
	merged, err := mergeTOML(base, o.variant)
	if err != nil {
		return fmt.Errorf("-variant: %w", err)
	}
	variantCfg := filepath.Join(work, "configuration-bench-variant.toml")
	if err := os.WriteFile(variantCfg, merged, 0o644); err != nil {
		return err
	}
	handlers = append(handlers, harness.CocoHandler("coco-variant", variantCfg, o.sandboxerOption()))
	ctrd, err := harness.Start(ctx, harness.Options{
		Repo: repo, Bins: bins,
		Handlers: handlers,
		Env:      []string{"COCO_SHARE_DIR=" + guest}, Logf: logf,
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

	rep := &bench.Report{Runs: o.runs, Meta: meta(guest, generic, o)}
	rep.Meta["config"] = cocoCfg
	if o.kernelArgs != "" {
		rep.Meta["config"] += fmt.Sprintf(" (coco-dev + kernel_params %q)", o.kernelArgs)
	}
	rep.Meta["config"] += fmt.Sprintf(", sandboxer %s", o.sandboxer)
	var coco, cocoGeneric, runc, floor, floorGeneric, mem bench.Series
	var qemuArgv, floorArgv, floorGenericArgv []string
	paired := bench.Paired{}
	// per run, coco − coco-variant: RunPodSandbox, first output, StartContainer
	var variantPodDiff, variantOutputDiff, variantStartDiff []float64
	var cocoVariant bench.Series
	floorConsole := filepath.Join(work, "floor-console.log")
	for i := -o.warmup; i < o.runs; i++ {
		tag := fmt.Sprintf("run %d/%d", i+1, o.runs)
		if i < 0 {
			tag = "warm-up"
		}
		// The pods of one run, in the order they start. The generic kernel's
		// and the variant pod go before the coco pod in alternate runs: the
		// machine's speed drifts, and a fixed order would bias the pairs.
		genericFirst := genericCfg != "" && (i+o.warmup)%2 == 1
		variantFirst := (i+o.warmup)%2 == 0
		var cs, gs, ns, rs bench.PodSample
		type pod struct {
			what, handler, name string
			coco                bool
			out                 *bench.PodSample
		}
		n := i + o.warmup
		generic := pod{"coco pod, generic kernel", "coco-generic", fmt.Sprintf("bench-generic-%d", n), true, &gs}
		variant := pod{"coco pod " + o.variantName, "coco-variant", fmt.Sprintf("bench-variant-%d", n), true, &ns}
		var order []pod
		if genericFirst {
			order = append(order, generic)
		}
		if variantFirst {
			order = append(order, variant)
		}
		order = append(order, pod{"coco pod", "coco", fmt.Sprintf("bench-coco-%d", n), true, &cs})
		if !variantFirst {
			order = append(order, variant)
		}
		if genericCfg != "" && !genericFirst {
			order = append(order, generic)
		}
		order = append(order, pod{"runc pod", "runc", fmt.Sprintf("bench-runc-%d", n), false, &rs})
		failed := false
		for _, p := range order {
			logf("%s: %s", tag, p.what)
			var err error
			if *p.out, err = bench.MeasurePod(ctx, env, p.handler, p.coco, p.name); err != nil {
				// A failed pod is reported and its run left out; the bench
				// goes on, so one flaky start does not cost the rest.
				logf("%s: %s failed: %v", tag, p.what, err)
				rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %s: %v", tag, p.what, err))
				if ctx.Err() != nil {
					return err
				}
				failed = true
				break
			}
		}
		if failed {
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
		if floorGenericArgv == nil && len(gs.QEMUArgv) > 0 {
			if floorGenericArgv, err = floorSetup(ctx, repo, work, gs.QEMUArgv, floorConsole); err != nil {
				return err
			}
			rep.Meta["floor argv, generic kernel"] = strings.Join(floorGenericArgv, " ")
		}
		if i < 0 {
			continue
		}
		hostShare := bench.AddCoco(&coco, cs)
		bench.AddCoco(&cocoVariant, ns)
		variantPodDiff = append(variantPodDiff, cs.RunPodMs-ns.RunPodMs)
		variantOutputDiff = append(variantOutputDiff, cs.ToOutputMs-ns.ToOutputMs)
		variantStartDiff = append(variantStartDiff, cs.StartMs-ns.StartMs)
		if genericCfg != "" {
			bench.AddCoco(&cocoGeneric, gs)
			paired.Add(bench.RatioPodGeneric, cs.RunPodMs, gs.RunPodMs)
			rep.Samples = append(rep.Samples, gs)
		}
		bench.AddRunc(&runc, rs)
		paired.Add(bench.RatioRunPod, cs.RunPodMs, rs.RunPodMs)
		paired.Add(bench.RatioHostShare, hostShare, rs.RunPodMs)
		paired.Add(bench.RatioToOutput, cs.ToOutputMs, rs.ToOutputMs)
		paired.Add(bench.RatioStart, cs.StartMs, rs.StartMs)
		paired.Add(bench.RatioStop, cs.StopPodMs, rs.StopPodMs)
		paired.Add(bench.RatioExec, cs.ExecSyncMs, rs.ExecSyncMs)
		cocoHost, runcHost := cs.ShimMem.Add(cs.HelperMem), rs.ShimMem.Add(rs.HelperMem)
		paired.Add(bench.RatioHostMem, cocoHost.PSSKiB, runcHost.PSSKiB)
		paired.Add(bench.RatioHostMemAnon, cocoHost.AnonKiB, runcHost.AnonKiB)
		paired.Add(bench.RatioShimPSS, cs.ShimMem.PSSKiB, rs.ShimMem.PSSKiB)
		mem.Add("coco per-pod host processes PSS (shim; + vhost-device-vsock if configured)", cocoHost.PSSKiB)
		mem.Add("coco per-pod host processes anonymous", cocoHost.AnonKiB)
		mem.Add("runc per-pod host processes PSS (static shim + pause)", runcHost.PSSKiB)
		mem.Add("runc per-pod host processes anonymous", runcHost.AnonKiB)
		mem.Add("coco shim RSS", cs.ShimMem.RSSKiB)
		mem.Add("coco shim PSS", cs.ShimMem.PSSKiB)
		mem.Add("coco shim anonymous", cs.ShimMem.AnonKiB)
		mem.Add("runc shim RSS (containerd-shim-runc-v2)", rs.ShimMem.RSSKiB)
		mem.Add("runc shim PSS (containerd-shim-runc-v2)", rs.ShimMem.PSSKiB)
		mem.Add("runc shim anonymous", rs.ShimMem.AnonKiB)
		mem.Add("runc pause PSS", rs.HelperMem.PSSKiB)
		mem.Add("QEMU RSS", cs.VMMMem.RSSKiB)
		mem.Add("QEMU PSS", cs.VMMMem.PSSKiB)
		mem.Add("QEMU PSS, coco "+o.variantName, ns.VMMMem.PSSKiB)
		mem.Add("QEMU anonymous (TCG code cache, heap; guest RAM is a shared file)", cs.VMMMem.AnonKiB)
		if genericCfg != "" {
			mem.Add("QEMU RSS, generic kernel", gs.VMMMem.RSSKiB)
		}
		mem.Add("vhost-device-vsock RSS", cs.HelperMem.RSSKiB)
		mem.Add("vhost-device-vsock PSS", cs.HelperMem.PSSKiB)
		rep.Samples = append(rep.Samples, cs, rs)
		// The bare boot right after the pods it is the floor of: the
		// machine is shared, and its speed drifts over a run.
		bareBoot := func(argv []string, s *bench.Series, what string) (bench.FloorResult, error) {
			logf("%s: bare QEMU boot (floor%s)", tag, what)
			fr, err := bench.BareBoot(ctx, argv, floorConsole)
			if err != nil {
				return fr, err
			}
			s.Add(bench.FloorInit, fr.InitMs)
			s.Add(bench.FloorPreClock, fr.PreClockMs)
			if fr.FirmwareMs > 0 {
				s.Add(bench.FloorFirmware, fr.FirmwareMs)
				s.Add(bench.FloorFwToClock, fr.PreClockMs-fr.FirmwareMs)
			}
			s.Add(bench.FloorGuestInit, fr.GuestInitMs)
			s.Add(bench.FloorExit, fr.ExitMs)
			return fr, nil
		}
		var fr, gr bench.FloorResult
		if floorGenericArgv != nil && genericFirst {
			if gr, err = bareBoot(floorGenericArgv, &floorGeneric, ", generic kernel"); err != nil {
				return err
			}
		}
		if floorArgv != nil {
			if fr, err = bareBoot(floorArgv, &floor, ""); err != nil {
				return err
			}
			paired.Add(bench.RatioPodFloor, cs.RunPodMs, fr.InitMs)
			// What a user waits for, against the least any VM runtime could
			// do: boot this kernel, then start a container as runc does.
			paired.Add(bench.RatioFirstOutput, cs.ToOutputMs, fr.InitMs+rs.ToOutputMs-rs.RunPodMs)
		}
		if floorGenericArgv != nil && !genericFirst {
			if gr, err = bareBoot(floorGenericArgv, &floorGeneric, ", generic kernel"); err != nil {
				return err
			}
		}
		if floorArgv != nil && floorGenericArgv != nil {
			paired.Add(bench.RatioFloorGeneric, fr.InitMs, gr.InitMs)
			paired.Add(bench.RatioInitGeneric, fr.GuestInitMs, gr.GuestInitMs)
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
	rep.CocoGeneric, rep.FloorGeneric = cocoGeneric.Stats(), floorGeneric.Stats()
	rep.CocoVariant, rep.VariantName = cocoVariant.Stats(), o.variantName
	if len(variantPodDiff) > 0 {
		rep.VariantDiff = []bench.NamedStat{
			{Name: bench.PodTotal, Stat: bench.Summarize(variantPodDiff)},
			{Name: bench.CtrStart, Stat: bench.Summarize(variantStartDiff)},
			{Name: bench.ToOutput, Stat: bench.Summarize(variantOutputDiff)},
		}
	}
	// Bursts: N pods at once against one, each burst measured once.
	burst := map[int]float64{}
	for _, c := range rep.Concurrent {
		if c.Handler == "coco-burst" {
			burst[c.N] = c.TotalMs
		}
	}
	for n, t := range burst {
		if n > 1 {
			paired.Add(fmt.Sprintf("%d concurrent coco pods / one (burst total time)", n), t, burst[1])
		}
	}
	rep.Ratios = paired.Stats()

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

func meta(guest, generic string, o options) map[string]string {
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
	m["guest"] = guestMeta(guest)
	if generic != "" {
		m["generic guest"] = guestMeta(generic)
	}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		m["accel"] = "auto (a KVM probe decides; see qemu argv in the JSON)"
	} else {
		m["accel"] = "tcg (no /dev/kvm)"
	}
	return m
}

// guestMeta names an asset directory's kernel and sizes.
func guestMeta(dir string) string {
	sizes := []string{dir}
	if rel, err := os.ReadFile(filepath.Join(dir, "kernel.release")); err == nil {
		sizes = append(sizes, "kernel "+strings.TrimSpace(string(rel)))
	}
	for _, f := range []string{"vmlinux", "initrd.img", "initrd-dev.img", "tools.erofs", "coco-agent"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
			sizes = append(sizes, fmt.Sprintf("%s %.1f MB", f, float64(fi.Size())/1e6))
		}
	}
	return strings.Join(sizes, ", ")
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
