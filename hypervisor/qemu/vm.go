// Package qemu is the QEMU driver: it turns a hypervisor.Config into a typed
// QEMU command line (every TEE's machine options), runs QEMU with the
// per-VM vhost-device-vsock daemon when kernel vhost-vsock is unavailable,
// and controls the VM over QMP.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tether"
	"github.com/coco-runtime/coco/hypervisor/vsock"
	"github.com/coco-runtime/coco/hypervisor/vsock/vhostuser"
)

// consoleTailLines is how much of the guest console an error carries.
const consoleTailLines = 20

// KVMProber tells whether KVM really works with the QEMU at qemuPath
// (nil error) without risking a hang; accel "auto" uses it.
type KVMProber func(ctx context.Context, qemuPath string) error

// VM is one QEMU virtual machine. It implements hypervisor.VM, Commander,
// DiskHotplugger, NICAttacher and Quitter.
type VM struct {
	plan    *plan
	planned bool // made by Plan: can show its command, cannot start
	host    host
	probe   KVMProber

	mu       sync.Mutex
	started  bool
	stopped  bool
	cmd      *exec.Cmd
	daemon   *daemon
	backend  *vhostuser.Backend // the vsock device when the shim serves it (no daemon)
	launch   hypervisor.LaunchTimes
	console  *hypervisor.Console
	cid      *vsock.CID
	stopDone chan struct{} // closed when the first Stop has finished
	stopErr  error
	disks    map[string]int // hot-plugged disk id → hot-plug slot (-1: none)

	// mon and killed are also read by reap, which must not take mu: Start
	// holds mu while it waits for QEMU, possibly for a QEMU that died.
	mon    atomic.Pointer[monitor]
	killed atomic.Bool           // Stop sent SIGKILL
	exited chan struct{}         // closed by reap (or teardown if QEMU never ran)
	status hypervisor.ExitStatus // written before exited is closed
}

var (
	_ hypervisor.VM             = (*VM)(nil)
	_ hypervisor.Commander      = (*VM)(nil)
	_ hypervisor.DiskHotplugger = (*VM)(nil)
	_ hypervisor.NICAttacher    = (*VM)(nil)
)

// New validates cfg and prepares a VM; nothing runs until Start. A missing
// QEMU binary, guest asset, disk or vsock daemon is an error naming it.
func New(cfg hypervisor.Config) (*VM, error) {
	return newVM(cfg, realHost(), true)
}

// Plan validates cfg like New, but what is missing on this host (binary,
// guest assets, daemon) becomes a note instead of an error. The VM can show
// its Command but not Start: `vm-command` uses it to show a launch meant for
// another host.
func Plan(cfg hypervisor.Config) (*VM, error) {
	return newVM(cfg, realHost(), false)
}

func newVM(cfg hypervisor.Config, h host, strict bool) (*VM, error) {
	p, err := resolve(cfg, h, strict)
	if err != nil {
		return nil, err
	}
	if strict { // Plan's caller shows the notes itself
		for _, n := range p.notes {
			log.L.WithField("vm", cfg.ID).Info("qemu: " + n)
		}
	}
	return &VM{plan: p, planned: !strict, host: h, probe: defaultProber(), exited: make(chan struct{}), disks: map[string]int{}}, nil
}

// Command returns the QEMU argv, one element per line, and notes.
func (v *VM) Command() ([]string, []string, error) {
	args, err := v.plan.argv()
	if err != nil {
		return nil, nil, err
	}
	notes := append([]string(nil), v.plan.notes...)
	if v.plan.mode == modeVhost {
		notes = append(notes, fmt.Sprintf("vsock: guest-cid=%d is a placeholder; Start reserves a free CID on %s and passes it as vhostfd", placeholderCID, v.host.vhostDevice))
	}
	if v.plan.ramFile {
		notes = append(notes, fmt.Sprintf("guest memory: fd %d is a file Start creates on a tmpfs with 2 MiB pages (a memfd where the host refuses the mount)", v.plan.ramFD()))
	}
	return args, notes, nil
}

// Info describes the VM.
func (v *VM) Info() hypervisor.Info {
	v.mu.Lock()
	defer v.mu.Unlock()
	i := hypervisor.Info{ConsoleLog: v.plan.paths.console, StateDir: v.plan.cfg.StateDir, Accel: v.plan.accel, Launch: v.launch}
	if v.daemon != nil {
		i.HelperLog = v.plan.paths.daemonLog
	}
	if v.cmd != nil && v.cmd.Process != nil {
		i.PID = v.cmd.Process.Pid
	}
	return i
}

// Start launches QEMU (and the vsock daemon) and connects to QMP. On error
// everything started so far is torn down again, StateDir included.
func (v *VM) Start(ctx context.Context) (retErr error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.planned {
		return fmt.Errorf("%w: VM %s was made by Plan and cannot start", errdefs.ErrFailedPrecondition, v.plan.cfg.ID)
	}
	if v.started {
		return fmt.Errorf("%w: VM %s already started", errdefs.ErrFailedPrecondition, v.plan.cfg.ID)
	}
	v.started = true
	p := v.plan
	lg := log.G(ctx).WithField("vm", p.cfg.ID)

	if err := os.MkdirAll(p.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	defer func() {
		if retErr != nil {
			v.teardownLocked(ctx)
		}
	}()

	if err := v.resolveAccel(ctx); err != nil {
		return err
	}

	var extra []*os.File
	switch p.mode {
	case modeVhost:
		cid, err := vsock.ReserveCID(ctx, v.host.vhostDevice)
		if err != nil {
			return err
		}
		v.cid = cid
		p.cid = cid.ID
		extra = append(extra, cid.File)
		p.vhostFD = 3 // first of ExtraFiles
	case modeVhostUser:
		v.launch.HelperStart = time.Now()
		if p.cfg.Vsock.DaemonPath == "" {
			b, err := vhostuser.Listen(p.paths.vhostUser, vhostuser.Config{GuestCID: p.cid, UDS: p.paths.hybrid,
				Logf: func(format string, args ...any) { lg.Warnf(format, args...) }})
			if err != nil {
				return err
			}
			v.backend = b
		} else {
			d, err := startDaemon(ctx, p.cfg.Vsock.DaemonPath, p.cid, p.paths.vhostUser, p.paths.hybrid, p.paths.daemonLog)
			if err != nil {
				return err
			}
			v.daemon = d
		}
		v.launch.HelperReady = time.Now()
	}
	// In the order nicFD numbers them.
	for _, n := range p.cfg.NICs {
		if n.Tap == nil {
			return fmt.Errorf("%w: nic %q: no tap file", errdefs.ErrInvalidArgument, n.ID)
		}
		extra = append(extra, n.Tap)
	}
	if p.ramFile {
		ram, hugeErr := OpenRAM(p.cfg.StateDir, p.cfg.MemoryMiB)
		if ram == nil {
			return hugeErr
		}
		if hugeErr != nil {
			lg.WithError(hugeErr).Info("qemu: guest memory without huge pages")
		}
		// QEMU has its own copy once started; ramFD numbers this one.
		defer ram.Close()
		extra = append(extra, ram)
	}

	args, err := p.argv()
	if err != nil {
		return err
	}
	if v.console, err = hypervisor.StartConsole(p.paths.conPipe, p.paths.console, p.cfg.ConsoleLogMax); err != nil {
		return err
	}
	lg.WithField("argv", strings.Join(args, " ")).Debug("qemu: starting")
	cmd := exec.Command(args[0], args[1:]...)
	logf, err := openProcessLog(p.paths.log)
	if err != nil {
		return err
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = extra
	// Own process group (a Ctrl-C for the shim is not for the VM), but
	// tethered: QEMU dies with the shim, so a shim that is killed, or exits
	// before its Stop finished, cannot leave a VM running (issue 27).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	v.launch.Exec = time.Now()
	err = tether.Start(cmd)
	logf.Close() // QEMU has its own copy
	if err != nil {
		return fmt.Errorf("start %s: %w", args[0], err)
	}
	v.cmd = cmd
	// QEMU holds its own copy of the reserved vhost fd now.
	if v.cid != nil {
		_ = v.cid.Close()
	}
	go v.reap()

	// QEMU's monitor coming up is part of the boot: on a crowded host
	// (8 TCG pods starting on 2 cores) it took longer than a fixed 10 s.
	qctx, cancel := context.WithTimeout(ctx, p.cfg.BootTimeout)
	defer cancel()
	mon, err := dialMonitor(qctx, p.paths.qmp, v.running)
	if err != nil {
		select { // let a dying QEMU finish its last words
		case <-v.exited:
		case <-time.After(time.Second):
		}
		if qctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			err = fmt.Errorf("%w (waited hypervisor.boot_timeout = %s for QEMU's monitor)", err, p.cfg.BootTimeout)
		}
		return fmt.Errorf("%w; qemu stderr: %s", err, v.stderrTail())
	}
	v.launch.MonitorReady = time.Now()
	v.mon.Store(mon)
	var st struct {
		Status string `json:"status"`
	}
	if err := mon.run(qctx, "query-status", nil, &st); err != nil {
		return err
	}
	lg.WithField("pid", cmd.Process.Pid).WithField("status", st.Status).WithField("accel", p.accel).Info("qemu: VM started")
	return nil
}

// resolveAccel turns accel "auto" into kvm or tcg for a non-confidential
// guest. These hosts may expose a /dev/kvm that hangs real guests, so only
// a probe that boots something under KVM decides.
func (v *VM) resolveAccel(ctx context.Context) error {
	p := v.plan
	if p.cfg.Accel != "" && p.cfg.Accel != "auto" || p.confidential() {
		return nil
	}
	p.accel = "tcg"
	if v.probe == nil {
		log.G(ctx).Info("qemu: accel auto: no KVM probe available, using tcg")
	} else if err := v.probe(ctx, p.binary); err != nil {
		log.G(ctx).WithError(err).Info("qemu: accel auto: KVM probe failed, using tcg")
	} else {
		p.accel = "kvm"
	}
	p.cpu = cpuModel(p.cfg.CPUModel, p.accel, p.machine)
	return nil
}

// reap waits for QEMU and records why it exited.
func (v *VM) reap() {
	err := v.cmd.Wait()
	st := hypervisor.ExitStatus{ExitedAt: time.Now(), Code: v.cmd.ProcessState.ExitCode()}
	killed := v.killed.Load()
	// The event pump ends when QMP's connection closes, which QEMU's exit
	// causes; waiting for it makes sure the last SHUTDOWN event is counted.
	mon := v.mon.Load()
	if mon != nil {
		select {
		case <-mon.pumpDone:
		case <-time.After(time.Second):
		}
	}
	shutdown, panicked := mon.exitEvents()
	ws, _ := v.cmd.ProcessState.Sys().(syscall.WaitStatus)
	st.Code, st.Reason = exitReason(ws, killed, shutdown, panicked, v.stderrTail())
	if err != nil && !errors.As(err, new(*exec.ExitError)) {
		st.Reason += " (" + err.Error() + ")"
	}
	v.status = st
	// The daemon has nothing to serve once QEMU is gone.
	v.daemon.stop(time.Second)
	v.backend.Close()
	// The console log is complete before anyone learns that QEMU exited.
	v.console.Close()
	close(v.exited)
}

// exitReason explains a QEMU exit from its wait status, whether Stop killed
// it, and the last SHUTDOWN / GUEST_PANICKED events QMP reported.
func exitReason(ws syscall.WaitStatus, killed bool, shutdown string, panicked bool, stderr string) (int, string) {
	if ws.Signaled() {
		r := fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
		if killed {
			r += " at the stop deadline"
		}
		return 128 + int(ws.Signal()), r
	}
	code := ws.ExitStatus()
	switch {
	case panicked || shutdown == "guest-panic":
		return code, "guest panicked"
	case shutdown == "guest-shutdown":
		return code, "guest powered off"
	case shutdown == "guest-reset":
		// -no-reboot: a reboot, including the one panic=1 triggers, ends QEMU.
		return code, "guest rebooted or panicked (reset with -no-reboot)"
	case shutdown == "host-qmp-quit" || shutdown == "host-qmp-system-reset":
		return code, "stopped by the host (" + shutdown + ")"
	case shutdown == "host-signal":
		return code, "QEMU received a termination signal"
	case shutdown != "":
		return code, "shutdown: " + shutdown
	case code != 0:
		return code, fmt.Sprintf("QEMU exited with code %d: %s", code, lastLine(stderr))
	}
	return code, "QEMU exited"
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func (v *VM) stderrTail() string {
	return processLogTail(v.plan.paths.log)
}

func (v *VM) running() bool {
	select {
	case <-v.exited:
		return false
	default:
		return true
	}
}

// Wait blocks until QEMU has exited and says why.
func (v *VM) Wait(ctx context.Context) (hypervisor.ExitStatus, error) {
	v.mu.Lock()
	started := v.started && v.cmd != nil
	v.mu.Unlock()
	if !started {
		return hypervisor.ExitStatus{}, fmt.Errorf("%w: VM %s is not started", errdefs.ErrFailedPrecondition, v.plan.cfg.ID)
	}
	select {
	case <-v.exited:
		return v.status, nil
	case <-ctx.Done():
		return hypervisor.ExitStatus{}, ctx.Err()
	}
}

// Dial connects to a guest vsock port, retrying until the boot timeout (or
// ctx) ends, or QEMU exits.
// ListenGuest accepts guest-initiated connections to host port port. With
// vhost-device-vsock they arrive on the unix socket <uds-path>_<port>.
func (v *VM) ListenGuest(port uint32) (net.Listener, error) {
	if v.plan.mode == modeVhost {
		return nil, fmt.Errorf("guest-initiated connections on kernel vhost-vsock share the host's port space: %w", errdefs.ErrNotImplemented)
	}
	path := fmt.Sprintf("%s_%d", v.plan.paths.hybrid, port)
	os.Remove(path)
	return net.Listen("unix", path)
}

func (v *VM) Dial(ctx context.Context, port uint32) (net.Conn, error) {
	v.mu.Lock()
	ok := v.started && v.cmd != nil && !v.stopped
	p := v.plan
	v.mu.Unlock()
	if !ok || !v.running() {
		return nil, fmt.Errorf("%w: VM %s is not running", errdefs.ErrFailedPrecondition, p.cfg.ID)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.BootTimeout)
	defer cancel()
	// Give up at once if QEMU dies: the guest will never answer.
	go func() {
		select {
		case <-v.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	var c net.Conn
	var err error
	if p.mode == modeVhost {
		c, err = vsock.DialVhost(ctx, p.cid, port)
	} else {
		c, err = vsock.DialHybrid(ctx, p.paths.hybrid, port)
	}
	if err == nil {
		return c, nil
	}
	why := ""
	if !v.running() {
		why = "; QEMU exited: " + v.status.Reason
	}
	return nil, fmt.Errorf("%w: VM %s: guest port %d not reachable after %s: %w%s\nlast %d lines of the guest console (%s):\n%s",
		errdefs.ErrUnavailable, p.cfg.ID, port, time.Since(start).Round(time.Millisecond), err, why,
		consoleTailLines, p.paths.console, tailLines(p.paths.console, consoleTailLines))
}
