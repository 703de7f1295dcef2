//go:build integration

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/hypervisor/vsock"
	"github.com/coco-runtime/coco/integration/harness"
	"github.com/coco-runtime/coco/sandbox"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Env is what a pod measurement needs from the running harness.
type Env struct {
	CRI *harness.CRI
	// CocoStateDir is the shim's runtime.state_dir (/run/coco): the pod's
	// phases.json and sandbox.json live in <CocoStateDir>/<pod id>.
	CocoStateDir string
	LogDir       string
	// RoundTrips is how many agent Health and ExecSync calls to time per pod.
	RoundTrips int
}

// PodSample is everything measured for one pod.
type PodSample struct {
	Handler string `json:"handler"`
	PodID   string `json:"pod_id"`

	RunPodMs float64 `json:"run_pod_ms"`    // RunPodSandbox, CRI wall time
	RunPodAt int64   `json:"run_pod_at_ns"` // RunPodSandbox sent (Unix ns; phases.json uses the same clock)
	// RunPodEndAt is when RunPodSandbox returned, on the same wall clock:
	// host rows that end there must not mix it with the monotonic RunPodMs.
	RunPodEndAt int64   `json:"run_pod_end_at_ns"`
	CreateMs    float64 `json:"create_ms"`    // CreateContainer
	StartMs     float64 `json:"start_ms"`     // StartContainer
	FirstOutMs  float64 `json:"first_out_ms"` // StartContainer returned → first line in the CRI log
	ToOutputMs  float64 `json:"to_output_ms"` // RunPodSandbox called → first output
	ExecSyncMs  float64 `json:"exec_sync_ms"` // median ExecSync `true`
	AgentRTTMs  float64 `json:"agent_rtt_ms"` // median agent Health, host → guest → host (coco only)
	// GuestZeroAt is the guest clock's zero on the host clock (Unix ns),
	// from the quickest of the bench's own Health calls: good to half of
	// that round trip, where the shim's estimate rests on the first, cold
	// one. 0 when the bench could not reach the agent.
	GuestZeroAt int64 `json:"guest_zero_at_ns"`
	// The agent's first exchange on its announced connection (guest clock,
	// ms since kernel start), as its later Health reports it: the shim's
	// first Health read, and its answer written. 0 when not reported.
	GuestFirstRequestMs float64 `json:"guest_first_request_ms"`
	GuestFirstReplyMs   float64 `json:"guest_first_reply_ms"`
	StopPodMs           float64 `json:"stop_pod_ms"` // StopPodSandbox + RemovePodSandbox
	ShimMem             Mem     `json:"shim_mem"`    // the pod's shim process
	VMMMem              Mem     `json:"vmm_mem"`     // QEMU (coco only), and the helper's share of the guest memory it maps (HostMem)
	// HelperMem is the pod's other host processes: vhost-device-vsock for
	// coco, the pause process for runc (see HostMem).
	HelperMem  Mem      `json:"helper_mem"`
	QEMUArgv   []string `json:"-"`
	ExecErrors []string `json:"exec_errors,omitempty"`

	// Phases is the shim's phases.json (coco only).
	Phases *sandbox.Phases `json:"phases,omitempty"`
	// Container is the phases of the workload container (coco only).
	Container *sandbox.ContainerPhases `json:"container,omitempty"`
}

// PodTimeout bounds one measured pod, or one burst, from RunPodSandbox to
// removal. A pod start takes seconds even under TCG; a runtime that hangs
// becomes a reported failure instead of a bench that never ends.
const PodTimeout = 5 * time.Minute

// explainTimeout says so when err comes from PodTimeout running out, rather
// than leaving a bare "context deadline exceeded".
func explainTimeout(ctx context.Context, err error) error {
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w (not done within bench.PodTimeout, %s: the runtime hung; see the containerd log tail)", err, PodTimeout)
	}
	return err
}

// MeasurePod runs one pod with one container printing a line and sleeping,
// times each CRI step, reads the shim's phases (coco), samples memory,
// times agent round trips and ExecSync, and removes the pod again.
func MeasurePod(ctx context.Context, env Env, handler string, coco bool, name string) (s PodSample, err error) {
	ctx, cancel := context.WithTimeout(ctx, PodTimeout)
	defer cancel()
	defer func() { err = explainTimeout(ctx, err) }()
	s.Handler = handler
	cfg := harness.PodConfig(harness.PodOptions{Name: name, LogDir: env.LogDir})
	t0 := time.Now()
	s.RunPodAt = t0.UnixNano()
	pod, err := env.CRI.RunPod(ctx, handler, cfg)
	if err != nil {
		return s, fmt.Errorf("RunPodSandbox (%s): %w", handler, err)
	}
	s.RunPodMs = msSince(t0)
	s.RunPodEndAt = time.Now().UnixNano()
	s.PodID = pod.ID
	defer func() {
		t := time.Now()
		rerr := env.CRI.RemovePod(context.WithoutCancel(ctx), pod.ID)
		s.StopPodMs = msSince(t)
		if err == nil {
			err = rerr
		}
	}()

	logName := name + ".log"
	logPath := filepath.Join(env.LogDir, logName)
	os.Remove(logPath)
	ccfg := harness.ContainerConfig("work", logName, "sh", "-c", "echo ready; exec sleep 1000")
	ccfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(),
	}
	t := time.Now()
	cr, err := env.CRI.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.ID, Config: ccfg, SandboxConfig: cfg})
	if err != nil {
		return s, fmt.Errorf("CreateContainer (%s): %w", handler, err)
	}
	s.CreateMs = msSince(t)
	t = time.Now()
	if _, err := env.CRI.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		return s, fmt.Errorf("StartContainer (%s): %w", handler, err)
	}
	s.StartMs = msSince(t)
	t = time.Now()
	if err := waitForOutput(ctx, logPath, "ready", 30*time.Second); err != nil {
		return s, fmt.Errorf("%s: %w", handler, err)
	}
	s.FirstOutMs = msSince(t)
	s.ToOutputMs = msSince(t0)

	var execs []float64
	for i := 0; i < env.RoundTrips; i++ {
		t := time.Now()
		// A failed exec is reported, not fatal: one flaky call should not
		// throw away the rest of a 15-minute run.
		if _, _, code, err := env.CRI.Exec(ctx, cr.ContainerId, 30*time.Second, "true"); err != nil || code != 0 {
			s.ExecErrors = append(s.ExecErrors, fmt.Sprintf("ExecSync true (%s): code %d, %v", handler, code, err))
			continue
		}
		execs = append(execs, msSince(t))
	}
	s.ExecSyncMs = Summarize(execs).Median

	if !coco {
		s.ShimMem, s.HelperMem, _ = HostMem(false, pod.ID, "", 0)
		return s, nil
	}
	podDir := filepath.Join(env.CocoStateDir, pod.ID)
	var ph sandbox.Phases
	if err := readJSON(filepath.Join(podDir, sandbox.PhasesFile), &ph); err != nil {
		return s, err
	}
	s.Phases = &ph
	for i := range ph.Containers {
		if ph.Containers[i].ID == cr.ContainerId {
			s.Container = &ph.Containers[i]
		}
	}
	var st struct {
		VMStateDir string `json:"vm_state_dir"`
		VMPID      int    `json:"vm_pid"`
	}
	if err := readJSON(filepath.Join(podDir, "sandbox.json"), &st); err != nil {
		return s, err
	}
	if st.VMPID > 0 {
		s.VMMMem, _ = ReadMem(st.VMPID)
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.VMPID))
		s.QEMUArgv = strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	}
	var guestShared Mem
	s.ShimMem, s.HelperMem, guestShared = HostMem(true, pod.ID, st.VMStateDir, st.VMPID)
	s.VMMMem = s.VMMMem.Add(guestShared)
	if st.VMStateDir != "" {
		if r, err := agentRTT(ctx, filepath.Join(st.VMStateDir, "vsock.sock"), env.RoundTrips); err == nil {
			s.AgentRTTMs, s.GuestZeroAt = r.median, r.zero
			s.GuestFirstRequestMs = float64(r.last.GetFirstRequestNs()) / 1e6
			s.GuestFirstReplyMs = float64(r.last.GetFirstReplyNs()) / 1e6
		} else if !errors.Is(err, os.ErrNotExist) {
			return s, err
		}
	}
	return s, nil
}

// rttResult is what agentRTT measured.
type rttResult struct {
	median float64             // ms
	zero   int64               // the guest clock's zero on the host's (Unix ns)
	last   *api.HealthResponse // the agent's last answer
}

// agentRTT opens its own connection to the guest agent (the hybrid vsock
// socket of vhost-device-vsock) and times Health, the agent's no-op: one
// ttrpc round trip through the vsock path and the agent's policy gate. It
// returns the median round trip and, from the quickest one, where the
// guest clock's zero falls on the host clock.
func agentRTT(ctx context.Context, sock string, n int) (rttResult, error) {
	var r rttResult
	if _, err := os.Stat(sock); err != nil {
		return r, err // kernel vhost-vsock: no socket to borrow
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := vsock.DialHybrid(dctx, sock, api.AgentPort)
	if err != nil {
		return r, fmt.Errorf("bench: dial agent: %w", err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	agent := api.NewAgentClient(c)
	var (
		rtts []float64
		best = time.Duration(1<<63 - 1)
	)
	for i := 0; i < max(n, 1)*4; i++ {
		t := time.Now()
		h, err := agent.Health(dctx, &api.HealthRequest{})
		if err != nil {
			return r, fmt.Errorf("bench: agent Health: %w", err)
		}
		rtt := time.Since(t)
		rtts = append(rtts, float64(rtt.Microseconds())/1000)
		if rtt < best && h.GetNowNs() > 0 {
			best = rtt
			r.zero = t.Add(rtt/2).UnixNano() - int64(h.GetNowNs())
		}
		r.last = h
	}
	r.median = Summarize(rtts).Median
	return r, nil
}

func waitForOutput(ctx context.Context, path, want string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if data, err := os.ReadFile(path); err == nil && bytes.Contains(data, []byte(want)) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q in %s after %s", want, path, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("bench: %s: %w", path, err)
	}
	return nil
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
