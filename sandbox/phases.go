package sandbox

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// PhasesFile is written in the sandbox state directory while the pod runs:
// how long each step of the pod's start took, for `make bench` and for
// users asking where start-up time goes.
const PhasesFile = "phases.json"

// Phases are the measured steps of one pod start, in milliseconds. Host
// steps are timed by the shim's clock; guest steps by the guest's
// CLOCK_BOOTTIME, whose zero is the kernel's start.
type Phases struct {
	// Host side of Start.
	InitDataMs  float64 `json:"initdata_ms"`   // state file written (the init-data image is written by New)
	VMStartMs   float64 `json:"vm_start_ms"`   // VMM process launched (returns before the guest boots)
	AgentDialMs float64 `json:"agent_dial_ms"` // VMM launched → agent answered Health (includes the guest boot)
	SetupMs     float64 `json:"setup_ms"`      // SetupSandbox (+ guest pause container in sandbox-API mode)
	TotalMs     float64 `json:"total_ms"`      // the whole Start

	// Guest clock.
	GuestAgentStartMs float64 `json:"guest_agent_start_ms"` // kernel start → PID 1 running
	GuestAgentReadyMs float64 `json:"guest_agent_ready_ms"` // kernel start → agent serving
	GuestAnnouncedMs  float64 `json:"guest_announced_ms"`   // kernel start → agent connected to the host's ReadyPort (0: it did not)
	GuestHealthMs     float64 `json:"guest_health_ms"`      // kernel start → the agent answering the first Health

	// Host wall-clock instants (Unix ns) that place the steps on one time
	// line with the caller's (containerd's, the bench's) clock.
	ShimStartAtNs int64 `json:"shim_start_at_ns"` // the shim process started (10 ms resolution)
	StartAtNs     int64 `json:"start_at_ns"`      // Start called
	VMExecAtNs    int64 `json:"vm_exec_at_ns"`    // VMM about to be launched
	GuestZeroAtNs int64 `json:"guest_zero_at_ns"` // guest clock zero (kernel start), ± half a Health round trip
	AgentUpAtNs   int64 `json:"agent_up_at_ns"`   // agent answered Health on the host
	SetupDoneAtNs int64 `json:"setup_done_at_ns"` // SetupSandbox (and guest pause) done

	Containers []ContainerPhases `json:"containers,omitempty"`
}

// ContainerPhases are the host-measured steps of one CreateTask.
type ContainerPhases struct {
	ID        string  `json:"id"`
	RootfsMs  float64 `json:"rootfs_ms"`  // EROFS image built and hot-plugged (0 for the pause container)
	PrepareMs float64 `json:"prepare_ms"` // guest bundle written, rootfs mounted
	CreateMs  float64 `json:"create_ms"`  // stdio streams opened, task created (runc create)
	DoneAtNs  int64   `json:"done_at_ns"` // task created (host clock, Unix ns)
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

// processStart is when process pid ("self": this one) started, on the wall
// clock, to the kernel's 10 ms tick: its age on CLOCK_BOOTTIME (the clock
// /proc/<pid>/stat counts start times in) taken from now. Zero when /proc
// cannot tell.
func processStart(pid string) time.Time {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return time.Time{}
	}
	// The command name (field 2) may hold spaces; fields count after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return time.Time{}
	}
	fields := strings.Fields(string(b[i+1:]))
	const startTimeField = 22 - 3 // field 22, counted from field 3
	if len(fields) <= startTimeField {
		return time.Time{}
	}
	ticks, err := strconv.ParseUint(fields[startTimeField], 10, 64)
	if err != nil {
		return time.Time{}
	}
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return time.Time{}
	}
	const clockTicks = 100 // USER_HZ, fixed at 100 on Linux's user ABI
	age := time.Duration(ts.Nano()) - time.Duration(ticks)*time.Second/clockTicks
	return time.Now().Add(-age)
}
