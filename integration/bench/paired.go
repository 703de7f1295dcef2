//go:build integration

package bench

// Paired holds, for each ratio, one quotient per run. Pods measured side by
// side in one run share the machine's momentary speed (these machines are
// shared and drift by 2x over minutes), so the median of per-run quotients,
// with their min and max, is the figure to read, not a quotient of medians.
type Paired map[string][]float64

// Add records num/den for one run; a side that was not measured (0)
// records nothing rather than a 0 or an infinity.
func (p Paired) Add(name string, num, den float64) {
	if num > 0 && den > 0 {
		p[name] = append(p[name], num/den)
	}
}

// Stats is each ratio's median, min and max over the runs.
func (p Paired) Stats() map[string]Stat {
	out := make(map[string]Stat, len(p))
	for k, xs := range p {
		out[k] = Summarize(xs)
	}
	return out
}

// Ratio names, shared by the report and its README.
const (
	RatioRunPod       = "RunPodSandbox coco / runc"
	RatioHostShare    = "host-side share of coco's RunPodSandbox / runc's whole RunPodSandbox"
	RatioPodFloor     = "pod ready / bare boot (RunPodSandbox / exec → init running)"
	RatioFirstOutput  = "first output: coco end to end / (bare boot + runc's container start to its output)"
	RatioToOutput     = "first output end to end coco / runc"
	RatioStart        = "StartContainer coco / runc"
	RatioStop         = "StopPodSandbox + RemovePodSandbox coco / runc"
	RatioExec         = "ExecSync coco / runc"
	RatioHostMem      = "per-pod host memory PSS coco (shim, + vhost-device-vsock if used) / runc (static shim + pause)"
	RatioHostMemAnon  = "per-pod host memory anonymous coco / runc (same processes)"
	RatioShimPSS      = "shim PSS alone coco / runc"
	RatioFloorGeneric = "floor ours / generic kernel"
	RatioInitGeneric  = "floor kernel start → init ours / generic kernel"
	RatioPodGeneric   = "RunPodSandbox ours / generic kernel"
)
