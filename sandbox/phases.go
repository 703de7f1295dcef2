package sandbox

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/coco-runtime/coco/hypervisor"
)

// PhasesFile is written in the sandbox state directory while the pod runs:
// how long each step of the pod's start took, for `make bench` and for
// users asking where start-up time goes. The instants of the VMM's exec,
// the agent's answer and the setup are written as each is reached, so a
// start that hangs (or a test holding it there) shows how far it got.
const PhasesFile = "phases.json"

// Phases are the measured steps of one pod start, in milliseconds. Host
// steps are timed by the shim's clock; guest steps by the guest's
// CLOCK_BOOTTIME, whose zero is the kernel's start.
type Phases struct {
	// Host side of Start.
	InitDataMs float64 `json:"initdata_ms"` // state file written (the init-data image is written by New)
	NetworkMs  float64 `json:"network_ms"`  // taps and redirects in the pod's network namespace
	VMStartMs  float64 `json:"vm_start_ms"` // VMM process launched (returns before the guest boots)
	// VsockHelperMs: the per-VM vhost-device-vsock exec'd until its socket
	// is up (part of VMStartMs; 0 without one).
	VsockHelperMs float64 `json:"vsock_helper_ms"`
	AgentDialMs   float64 `json:"agent_dial_ms"` // VMM launched → agent answered Health (includes the guest boot)
	SetupMs       float64 `json:"setup_ms"`      // Events subscription + SetupSandbox
	TotalMs       float64 `json:"total_ms"`      // the whole Start

	// Guest clock.
	GuestAgentStartMs float64 `json:"guest_agent_start_ms"` // kernel start → PID 1 running
	GuestAgentReadyMs float64 `json:"guest_agent_ready_ms"` // kernel start → agent serving
	GuestAnnouncedMs  float64 `json:"guest_announced_ms"`   // kernel start → agent connected to the host's ReadyPort (0: it did not)
	GuestHealthMs     float64 `json:"guest_health_ms"`      // kernel start → the agent answering the first Health

	// Host wall-clock instants (Unix ns) that place the steps on one time
	// line with the caller's (containerd's, the bench's) clock.
	BootstrapAtNs  int64 `json:"shim_bootstrap_at_ns"` // the shim's `start` command began (0: unknown)
	ShimStartAtNs  int64 `json:"shim_start_at_ns"`     // the long-running shim's Go initialisation reached the sandbox package
	StartAtNs      int64 `json:"start_at_ns"`          // Start called
	VMExecAtNs     int64 `json:"vm_exec_at_ns"`        // the VM's Start called (accel probe, vsock helper, then the VMM's exec)
	VMMExecAtNs    int64 `json:"vmm_exec_at_ns"`       // the VMM exec'd (0: the driver does not say)
	VMMReadyAtNs   int64 `json:"vmm_ready_at_ns"`      // the VMM answered on its monitor: its own set-up done, the guest running
	GuestZeroAtNs  int64 `json:"guest_zero_at_ns"`     // guest clock zero (kernel start), ± half a Health round trip
	AgentConnAtNs  int64 `json:"agent_conn_at_ns"`     // the agent's connection in hand (accepted or dialled)
	HealthSentAtNs int64 `json:"health_sent_at_ns"`    // the first Health sent to the agent
	AgentUpAtNs    int64 `json:"agent_up_at_ns"`       // agent answered Health on the host
	SetupDoneAtNs  int64 `json:"setup_done_at_ns"`     // SetupSandbox done

	Containers []ContainerPhases `json:"containers,omitempty"`
}

// ContainerPhases are the host-measured steps of one CreateTask.
type ContainerPhases struct {
	ID        string  `json:"id"`
	RootfsMs  float64 `json:"rootfs_ms"`  // EROFS image built and hot-plugged (0 for the pause container)
	PrepareMs float64 `json:"prepare_ms"` // guest bundle written, rootfs mounted
	CreateMs  float64 `json:"create_ms"`  // the stdio dials finished, task created (crun create)
	// StdioMs: the stdio streams' dials, which run alongside the rootfs and
	// PrepareContainer; CreateMs holds only what is left of them then.
	StdioMs  float64 `json:"stdio_ms"`
	DoneAtNs int64   `json:"done_at_ns"` // task created (host clock, Unix ns)
}

// phaseLog accumulates Phases and rewrites the file after every change.
type phaseLog struct {
	mu   sync.Mutex
	dir  string
	data Phases
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (p *phaseLog) update(f func(*Phases)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.data)
	b, err := json.MarshalIndent(&p.data, "", "  ")
	if err != nil {
		return
	}
	tmp := filepath.Join(p.dir, PhasesFile+".tmp")
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, filepath.Join(p.dir, PhasesFile))
	}
}

// The steps of Start, in order, as an observer is told them.
const (
	stepState   = "state"   // state file written
	stepNetwork = "network" // the pod's network plumbed
	stepVM      = "vm"      // the VMM launched
	stepAgent   = "agent"   // the guest booted and its agent answered
	stepSetup   = "setup"   // events subscribed, SetupSandbox done
	stepServe   = "serve"   // port-forward listener up
)

// startObserver is told the steps of Start as they begin, the way
// containerd traces spans: Start says what it does, the observer decides
// what to keep. Each step ends when the next begins, or at done.
type startObserver interface {
	step(name string)
	// launched hands over the VM driver's launch instants once it started.
	launched(t hypervisor.LaunchTimes)
	// agentUp hands over the agent connection once it answered.
	agentUp(c agentClient)
	// done: Start succeeded.
	done()
}

// phaseObserver turns Start's steps into phases.json: each step's
// duration, and the instants (written as they are reached, so a start that
// hangs shows how far it got).
type phaseObserver struct {
	log    *phaseLog
	now    func() time.Time
	began  map[string]time.Time
	last   string
	agent  agentClient
	ended  map[string]time.Duration
	getenv func(string) string
}

func newPhaseObserver(log *phaseLog) *phaseObserver {
	return &phaseObserver{log: log, now: time.Now, began: map[string]time.Time{}, ended: map[string]time.Duration{}, getenv: os.Getenv}
}

func (o *phaseObserver) step(name string) {
	t := o.now()
	if o.last != "" {
		o.ended[o.last] = t.Sub(o.began[o.last])
	}
	o.began[name], o.last = t, name
	switch name {
	case stepVM:
		o.log.update(func(p *Phases) { p.StartAtNs, p.VMExecAtNs = o.began[stepState].UnixNano(), t.UnixNano() })
	case stepSetup:
		o.log.update(func(p *Phases) { p.AgentUpAtNs = t.UnixNano() })
	case stepServe:
		o.log.update(func(p *Phases) { p.SetupDoneAtNs = t.UnixNano() })
	}
}

func (o *phaseObserver) launched(t hypervisor.LaunchTimes) {
	o.log.update(func(p *Phases) {
		if !t.HelperStart.IsZero() && !t.HelperReady.IsZero() {
			p.VsockHelperMs = ms(t.HelperReady.Sub(t.HelperStart))
		}
		if !t.Exec.IsZero() {
			p.VMMExecAtNs = t.Exec.UnixNano()
		}
		if !t.MonitorReady.IsZero() {
			p.VMMReadyAtNs = t.MonitorReady.UnixNano()
		}
	})
}

func (o *phaseObserver) agentUp(c agentClient) { o.agent = c }

func (o *phaseObserver) done() {
	t0 := o.began[stepState]
	total := o.now().Sub(t0)
	o.log.update(func(p *Phases) {
		p.InitDataMs, p.NetworkMs, p.VMStartMs = ms(o.ended[stepState]), ms(o.ended[stepNetwork]), ms(o.ended[stepVM])
		p.AgentDialMs, p.SetupMs, p.TotalMs = ms(o.ended[stepAgent]), ms(o.ended[stepSetup]), ms(total)
		p.StartAtNs, p.VMExecAtNs = t0.UnixNano(), o.began[stepVM].UnixNano()
		p.AgentUpAtNs, p.SetupDoneAtNs = o.began[stepSetup].UnixNano(), o.began[stepServe].UnixNano()
		p.ShimStartAtNs = initAt.UnixNano()
		if b := bootstrapAt(o.getenv); !b.IsZero() {
			p.BootstrapAtNs = b.UnixNano()
		}
		c := o.agent
		if c == nil {
			return
		}
		if z := c.GuestClockZero(); !z.IsZero() {
			p.GuestZeroAtNs = z.UnixNano()
		}
		if began, sent := c.HandshakeTimes(); !began.IsZero() {
			p.AgentConnAtNs, p.HealthSentAtNs = began.UnixNano(), sent.UnixNano()
		}
		health := c.Health()
		p.GuestAgentStartMs = float64(health.GetAgentStartNs()) / 1e6
		p.GuestAgentReadyMs = float64(health.GetAgentReadyNs()) / 1e6
		p.GuestAnnouncedMs = float64(health.GetAnnouncedNs()) / 1e6
		p.GuestHealthMs = float64(health.GetNowNs()) / 1e6
	})
}

// BootstrapAtEnv carries, from the shim's `start` command to the
// long-running shim it launches, when `start` began (Unix ns): containerd
// runs `start` first, and its cost is the shim's, not containerd's.
const BootstrapAtEnv = "COCO_SHIM_BOOTSTRAP_AT_NS"

// initAt is when this process's package initialisation reached this
// package: a few ms after its exec, where /proc's start time would only
// say which 10 ms tick it fell in.
var initAt = time.Now()

// bootstrapAt is BootstrapAtEnv's instant; zero when unset or garbled.
func bootstrapAt(getenv func(string) string) time.Time {
	ns, err := strconv.ParseInt(getenv(BootstrapAtEnv), 10, 64)
	if err != nil || ns <= 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
