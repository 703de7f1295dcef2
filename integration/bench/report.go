//go:build integration

package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// Report is the whole `make bench` result; it is also the JSON file.
type Report struct {
	Meta  map[string]string `json:"meta"`
	Runs  int               `json:"runs"`
	Coco  []NamedStat       `json:"coco"`  // ms, pod start phases and latencies
	Runc  []NamedStat       `json:"runc"`  // ms, the same steps through containerd's runc shim
	Floor []NamedStat       `json:"floor"` // ms, bare QEMU boot of the same kernel
	// The same pods and bare boots with Debian's generic kernel (bench
	// -generic-guest), run alternately with ours in the same run.
	CocoGeneric  []NamedStat `json:"coco_generic,omitempty"`
	FloorGeneric []NamedStat `json:"floor_generic,omitempty"`
	// The coco pod in its class with bench -variant appended (by default
	// [network] interfaces = "none"), and per run the coco pod's time minus
	// the variant's: what the variant saves (by default, the network's cost).
	VariantName string             `json:"variant_name,omitempty"`
	CocoVariant []NamedStat        `json:"coco_variant,omitempty"`
	VariantDiff []NamedStat        `json:"variant_diff,omitempty"`
	Memory      []NamedStat        `json:"memory"`            // KiB
	Ratios      map[string]Stat    `json:"ratios"`            // per-run quotients: median, min, max (Paired)
	Concurrent  []ConcurrentResult `json:"concurrent"`        // bursts of pods
	Network     []NetSample        `json:"network,omitempty"` // pod to pod over the CNI bridge, medians
	Samples     []PodSample        `json:"samples"`
	Errors      []string           `json:"errors,omitempty"`
}

// Phase names: the table prints them in this order. "host" marks time
// spent outside the guest (containerd, the shim, QEMU setup, host I/O).
const (
	PodTotal       = "RunPodSandbox (CRI, total)"
	PhBeforeVM     = "  containerd + shim start → QEMU exec [host]"
	PhToShim       = "    RunPodSandbox → shim `start` runs [host: containerd CRI, CNI]"
	PhShimStart    = "    shim `start` → shim daemon initialised [host: shim]"
	PhShimToVM     = "    shim daemon initialised → VM start [host: shim]"
	PhVMToExec     = "    VM start → QEMU exec [host: accel, vhost-device-vsock, argv]"
	PhVsockHelper  = "      vsock back-end up (the shim's; or vhost-device-vsock exec → socket) [host]"
	PhVMMSetup     = "  QEMU exec → QEMU's monitor answers [host: QEMU's own set-up]"
	PhVMMToClock   = "  QEMU's monitor answers → guest clock starts [firmware + early kernel]"
	PhKernelBoot   = "  guest kernel boot → agent start [guest clock]"
	PhAgentReady   = "  agent start → serving [guest clock]"
	PhConnect      = "  agent serving → shim has its connection [guest + vsock]"
	PhHealthSent   = "  shim has the connection → sends Health [host: shim]"
	PhHealthIn     = "  Health sent → read by the agent [guest: connect, vsock rx]"
	PhFirstHealth  = "  first Health read → answer written [guest work]"
	PhDialLag      = "  answer written → shim has it [host: vsock, shim]"
	PhSetup        = "  SetupSandbox [guest work: init-data, policy, hostname]"
	PhPause        = "  pause task prepare+create [guest work; podsandbox]"
	PhAfterSetup   = "  shim + containerd after the guest setup [host]"
	PodHostShare   = "  = host-side share (the [host] rows, QEMU's own set-up included)"
	CtrCreate      = "CreateContainer (CRI; metadata only, no shim call)"
	CtrStart       = "StartContainer (CRI: task create + start)"
	PhRootfs       = "  rootfs EROFS image + hotplug [host]"
	PhPrepare      = "  PrepareContainer [guest work]"
	PhRuncCreate   = "  stdio + crun create [guest work]"
	PhStartOther   = "  containerd + shim + runc start [host+guest]"
	CtrHostShare   = "  = host-side share of StartContainer (rootfs + rest)"
	CtrFirstOut    = "StartContainer returned → first output line"
	ToOutput       = "RunPodSandbox sent → first output (end to end)"
	AgentRTT       = "agent round trip (Health, own vsock conn)"
	ExecSync       = "ExecSync `true`"
	StopPod        = "StopPodSandbox + RemovePodSandbox"
	FloorInit      = "bare QEMU boot: exec → init running (the floor)"
	FloorPreClock  = "  QEMU exec → guest clock starts [VMM setup + early kernel]"
	FloorFirmware  = "    QEMU exec → firmware's first output [QEMU's start, kernel ELF loaded]"
	FloorFwToClock = "    firmware's first output → guest clock starts [firmware + early kernel]"
	FloorGuestInit = "  kernel start → init [guest clock]"
	FloorExit      = "bare QEMU boot: exec → QEMU exited after power-off"
)

// AddCoco appends one coco sample's phases to s and returns its host-side
// share of RunPodSandbox (ms), for the per-run ratio.
func AddCoco(s *Series, p PodSample) (hostShareMs float64) {
	ph := p.Phases
	s.Add(PodTotal, p.RunPodMs)
	var pause float64
	for _, c := range ph.Containers {
		if p.Container == nil || c.ID != p.Container.ID {
			pause += c.PrepareMs + c.CreateMs
		}
	}
	// One time line on the host clock: the bench's RunPodSandbox call, the
	// shim's instants (phases.json) and the guest clock, placed on the
	// host's through Health (± half a round trip).
	at := func(ns int64) float64 { return float64(ns-p.RunPodAt) / 1e6 }
	zeroAt := ph.GuestZeroAtNs // the shim's estimate, from the first (cold) Health
	if p.GuestZeroAt != 0 {
		zeroAt = p.GuestZeroAt // the bench's, from its quickest warm Health
	}
	vmStart, zero, up, setupDone := at(ph.VMExecAtNs), at(zeroAt), at(ph.AgentUpAtNs), at(ph.SetupDoneAtNs)
	// The VMM's own exec and monitor, when the driver reported them; else
	// (an older shim) the VM's start stands for both, as it used to.
	vmExec, vmmReady := vmStart, vmStart
	if ph.VMMExecAtNs != 0 && ph.VMMReadyAtNs != 0 {
		vmExec, vmmReady = at(ph.VMMExecAtNs), at(ph.VMMReadyAtNs)
	}
	before := vmExec
	// The first exchange, in time order: the agent serves and connects to
	// the host; the shim has the connection and sends Health; the agent
	// reads it, answers, and the shim has the answer. The agent's later
	// Health reports when it read and answered. Without that report (or
	// the shim's instants), serving → answered all counts as the guest's.
	ready := ph.GuestAgentReadyMs
	conn, sent := at(ph.AgentConnAtNs), at(ph.HealthSentAtNs)
	read, written := p.GuestFirstRequestMs, p.GuestFirstReplyMs
	if read == 0 || written < read || ph.AgentConnAtNs == 0 || ph.HealthSentAtNs == 0 {
		conn, sent = zero+ready, zero+ready
		read, written = ready, max(ph.GuestHealthMs, ready)
	}
	dialLag := up - (zero + written)
	// Wall clock against wall clock: the host's wall clock can drift from
	// the monotonic one that times RunPodMs by more than this row is long.
	end := p.RunPodMs
	if p.RunPodEndAt != 0 {
		end = at(p.RunPodEndAt)
	}
	after := end - setupDone - pause
	s.Add(PhBeforeVM, before)
	if ph.BootstrapAtNs != 0 && ph.ShimStartAtNs != 0 {
		s.Add(PhToShim, at(ph.BootstrapAtNs))
		s.Add(PhShimStart, at(ph.ShimStartAtNs)-at(ph.BootstrapAtNs))
		s.Add(PhShimToVM, vmStart-at(ph.ShimStartAtNs))
	}
	s.Add(PhVMToExec, vmExec-vmStart)
	s.Add(PhVsockHelper, ph.VsockHelperMs)
	s.Add(PhVMMSetup, vmmReady-vmExec)
	s.Add(PhVMMToClock, zero-vmmReady)
	s.Add(PhKernelBoot, ph.GuestAgentStartMs)
	s.Add(PhAgentReady, ph.GuestAgentReadyMs-ph.GuestAgentStartMs)
	s.Add(PhConnect, conn-(zero+ready))
	s.Add(PhHealthSent, sent-conn)
	s.Add(PhHealthIn, zero+read-sent)
	s.Add(PhFirstHealth, written-read)
	s.Add(PhDialLag, dialLag)
	s.Add(PhSetup, ph.SetupMs)
	s.Add(PhPause, pause)
	s.Add(PhAfterSetup, after)
	hostShareMs = before + (vmmReady - vmExec) + (sent - conn) + dialLag + after
	s.Add(PodHostShare, hostShareMs)
	s.Add(CtrCreate, p.CreateMs)
	s.Add(CtrStart, p.StartMs)
	// containerd's CRI creates the task (the shim's CreateTask, timed in
	// phases.json) inside StartContainer, not CreateContainer.
	if c := p.Container; c != nil {
		other := p.StartMs - c.RootfsMs - c.PrepareMs - c.CreateMs
		s.Add(PhRootfs, c.RootfsMs)
		s.Add(PhPrepare, c.PrepareMs)
		s.Add(PhRuncCreate, c.CreateMs)
		s.Add(PhStartOther, other)
		s.Add(CtrHostShare, c.RootfsMs+other)
	}
	addCommon(s, p)
	s.Add(AgentRTT, p.AgentRTTMs)
	return hostShareMs
}

// AddRunc appends one runc sample.
func AddRunc(s *Series, p PodSample) {
	s.Add(PodTotal, p.RunPodMs)
	s.Add(CtrCreate, p.CreateMs)
	s.Add(CtrStart, p.StartMs)
	addCommon(s, p)
}

func addCommon(s *Series, p PodSample) {
	s.Add(CtrFirstOut, p.FirstOutMs)
	s.Add(ToOutput, p.ToOutputMs)
	s.Add(ExecSync, p.ExecSyncMs)
	s.Add(StopPod, p.StopPodMs)
}

// Median looks a row up by name.
func Median(rows []NamedStat, name string) float64 {
	for _, r := range rows {
		if r.Name == name {
			return r.Median
		}
	}
	return 0
}

// WriteTable prints the report as plain aligned text.
func (r *Report) WriteTable(out io.Writer) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	line := func(cells ...string) { fmt.Fprintln(w, strings.Join(cells, "\t")+"\t") }
	keys := make([]string, 0, len(r.Meta))
	for _, k := range []string{"date", "host", "qemu", "accel", "config", "guest", "runs"} {
		if v, ok := r.Meta[k]; ok {
			keys = append(keys, fmt.Sprintf("%s: %s", k, v))
		}
	}
	fmt.Fprintln(out, strings.Join(keys, "\n"))
	fmt.Fprintln(out)
	// Columns: coco, coco with the generic kernel (when measured), runc.
	generic := len(r.CocoGeneric) > 0 || len(r.FloorGeneric) > 0
	byName := func(rows []NamedStat) map[string]NamedStat {
		m := map[string]NamedStat{}
		for _, s := range rows {
			m[s.Name] = s
		}
		return m
	}
	cells := func(m map[string]NamedStat, name string) []string {
		if s, ok := m[name]; ok {
			return []string{f1(s.Median), f1(s.Min), f1(s.Max)}
		}
		return []string{"", "", ""}
	}
	head := []string{"pod start (ms)", "coco median", "min", "max"}
	if generic {
		head = append(head, "generic kernel median", "min", "max")
	}
	line(append(head, "runc median", "min", "max")...)
	runc, cocoGeneric, floorGeneric := byName(r.Runc), byName(r.CocoGeneric), byName(r.FloorGeneric)
	row := func(s NamedStat, gen, rc map[string]NamedStat) {
		c := []string{s.Name, f1(s.Median), f1(s.Min), f1(s.Max)}
		if generic {
			c = append(c, cells(gen, s.Name)...)
		}
		line(append(c, cells(rc, s.Name)...)...)
	}
	for _, s := range r.Coco {
		row(s, cocoGeneric, runc)
	}
	for _, s := range r.Floor {
		row(s, floorGeneric, nil)
	}
	w.Flush()
	fmt.Fprintln(out)
	line("memory per pod (KiB)", "median", "min", "max")
	for _, s := range r.Memory {
		line(s.Name, f0(s.Median), f0(s.Min), f0(s.Max))
	}
	w.Flush()
	fmt.Fprintln(out)
	if len(r.Concurrent) > 0 {
		line("concurrent pods", "N", "total ms", "slowest ms", "machine CPU ms per pod", "CPU busy %", "per-pod RSS KiB", "per-pod PSS KiB", "host processes PSS KiB", "anonymous KiB")
		for _, c := range r.Concurrent {
			line(c.Handler, fmt.Sprint(c.N), f1(c.TotalMs), f1(c.SlowMs), f0(c.CPUPerPodMs), f0(c.CPUBusyPct), f0(c.PerPodMem.RSSKiB), f0(c.PerPodMem.PSSKiB),
				f0(c.PerPodHostMem.PSSKiB), f0(c.PerPodHostMem.AnonKiB))
		}
		w.Flush()
		fmt.Fprintln(out)
	}
	if len(r.VariantDiff) > 0 {
		variant := byName(r.CocoVariant)
		line("coco against coco "+r.VariantName+" (ms)", "variant median", "min", "max", "coco − variant, paired per run: median", "min", "max")
		for _, s := range r.VariantDiff {
			line(append(append([]string{s.Name}, cells(variant, s.Name)...), f1(s.Median), f1(s.Min), f1(s.Max))...)
		}
		w.Flush()
		fmt.Fprintln(out)
	}
	if len(r.Network) > 0 {
		line("pod to pod, same handler (median)", "TCP MB/s", "request ms")
		for _, n := range r.Network {
			line(fmt.Sprintf("%s ↔ %s (%d MB bulk; %d GETs, nc per request)", n.Handler, n.Handler, n.BulkBytes>>20, n.Requests),
				f1(n.ThroughputMBps), f1(n.RequestMs))
		}
		w.Flush()
		fmt.Fprintln(out)
	}
	line("ratio, per run (paired)", "median", "min", "max", "runs")
	for _, k := range sortedKeys(r.Ratios) {
		x := r.Ratios[k]
		line(k, fmt.Sprintf("%.2f", x.Median), fmt.Sprintf("%.2f", x.Min), fmt.Sprintf("%.2f", x.Max), fmt.Sprint(x.N))
	}
	w.Flush()
	for _, e := range r.Errors {
		fmt.Fprintln(out, "error:", e)
	}
}

func sortedKeys(m map[string]Stat) []string { return slices.Sorted(maps.Keys(m)) }

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func f0(v float64) string { return fmt.Sprintf("%.0f", v) }
