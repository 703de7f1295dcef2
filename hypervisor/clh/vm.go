package clh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tether"
	"github.com/coco-runtime/coco/hypervisor/vsock"
)

const (
	// defaultAPIWait bounds the wait for the API socket when Start's ctx
	// has no deadline: a VMM that has not answered by then never will.
	defaultAPIWait = 30 * time.Second
	// defaultStopGrace bounds a graceful Stop when ctx has no deadline.
	defaultStopGrace = 10 * time.Second
	// tailLines is how much of a log an error quotes.
	tailLines = 20
)

type lifecycle int

const (
	created lifecycle = iota // New returned; nothing runs
	running                  // process started (possibly exited since)
	stopped                  // Stop ran or Start failed
)

// VM is one Cloud Hypervisor guest. It implements hypervisor.VM,
// hypervisor.Commander, hypervisor.DiskHotplugger and hypervisor.NICAttacher.
type VM struct {
	cfg  hypervisor.Config
	plan *plan
	api  *apiClient
	// dial reaches a guest port over the hybrid vsock socket; a field so
	// tests can count attempts.
	dial func(ctx context.Context, socketPath string, port uint32) (net.Conn, error)

	mu       sync.Mutex
	state    lifecycle
	pid      int
	done     chan struct{} // closed once the process has exited and exit is set
	exit     hypervisor.ExitStatus
	stopping bool            // Stop asked the VMM to go; shapes the exit reason
	hotplug  map[string]bool // disk ids added with AddDisk
	console  *hypervisor.Console
}

var (
	_ hypervisor.VM             = (*VM)(nil)
	_ hypervisor.Commander      = (*VM)(nil)
	_ hypervisor.DiskHotplugger = (*VM)(nil)
	_ hypervisor.NICAttacher    = (*VM)(nil)
)

// New validates cfg and prepares the vm.create request. Nothing runs and
// nothing is created on disk until Start. Configuration errors are
// errdefs.ErrInvalidArgument and name the setting and the fix.
func New(cfg hypervisor.Config) (*VM, error) {
	p, err := buildPlan(cfg, nil)
	if err != nil {
		return nil, err
	}
	return &VM{
		cfg:     cfg,
		plan:    p,
		api:     newAPIClient(filepath.Join(cfg.StateDir, apiSocketName)),
		dial:    vsock.DialHybrid,
		hotplug: map[string]bool{},
	}, nil
}

// Plan is New for showing a launch on a host that lacks the binary or the
// guest assets: what is missing becomes a note instead of an error. The
// result can show its Command but must not be started.
func Plan(cfg hypervisor.Config) (hypervisor.Commander, error) {
	var missing []string
	p, err := buildPlan(cfg, &missing)
	if err != nil {
		return nil, err
	}
	p.notes = append(p.notes, missing...)
	return &VM{cfg: cfg, plan: p, api: newAPIClient(filepath.Join(cfg.StateDir, apiSocketName))}, nil
}

// Command returns the vm.create body, one line of indented JSON per
// element, and notes on what the configuration could not express.
func (v *VM) Command() ([]string, []string, error) {
	b, err := json.MarshalIndent(v.plan.body, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	launch := fmt.Sprintf("launch: %s --api-socket path=%s, then PUT /api/v1/vm.create with this body, then PUT /api/v1/vm.boot",
		v.cfg.Path, v.api.socket)
	if len(v.plan.nets) > 0 {
		launch = fmt.Sprintf("launch: %s --api-socket path=%s, then PUT /api/v1/vm.create with this body, then PUT /api/v1/vm.add-net per NIC (below), then PUT /api/v1/vm.boot",
			v.cfg.Path, v.api.socket)
	}
	notes := []string{launch}
	for _, n := range v.plan.nets {
		nb, err := json.Marshal(n)
		if err != nil {
			return nil, nil, err
		}
		notes = append(notes, fmt.Sprintf("vm.add-net %s, with the tap's fd attached (SCM_RIGHTS)", nb))
	}
	if slices.ContainsFunc(v.cfg.NICs, func(n hypervisor.NIC) bool { return n.MTU != 0 }) {
		notes = append(notes, "nic mtu not sent: Cloud Hypervisor would set it by the tap's name in its own network namespace; the host sets it on the tap, the agent in the guest")
	}
	notes = append(notes, v.plan.notes...)
	return strings.Split(string(b), "\n"), notes, nil
}

// Info describes the VM. Cloud Hypervisor only runs on KVM.
func (v *VM) Info() hypervisor.Info {
	v.mu.Lock()
	defer v.mu.Unlock()
	return hypervisor.Info{
		PID:        v.pid,
		ConsoleLog: filepath.Join(v.cfg.StateDir, consoleLogName),
		StateDir:   v.cfg.StateDir,
		Accel:      "kvm",
	}
}

// Start launches cloud-hypervisor, waits for its API, creates and boots the
// VM. On failure nothing is left running or on disk, and the error ends
// with the VMM's log tail.
func (v *VM) Start(ctx context.Context) error {
	v.mu.Lock()
	if v.state != created {
		v.mu.Unlock()
		return fmt.Errorf("clh: vm %s: start: already started or stopped (a VM starts once): %w", v.cfg.ID, errdefs.ErrFailedPrecondition)
	}
	if err := checkTaps(v.cfg.NICs); err != nil {
		v.mu.Unlock()
		return err
	}
	v.state = running
	v.mu.Unlock()

	if err := v.launch(); err != nil {
		v.cleanup(ctx)
		return err
	}
	if err := v.boot(ctx); err != nil {
		tail := v.logTail()
		v.cleanup(ctx)
		return fmt.Errorf("clh: vm %s: %w%s", v.cfg.ID, err, tail)
	}
	log.G(ctx).WithField("vm", v.cfg.ID).WithField("pid", v.Info().PID).Debug("cloud-hypervisor booted the guest")
	return nil
}

// launch creates the state directory and starts the VMM process.
func (v *VM) launch() error {
	dir := v.cfg.StateDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("clh: state directory: %w", err)
	}
	// Leftovers from a crashed run would make the VMM fail to bind.
	for _, name := range []string{apiSocketName, vsockSocketName} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("clh: remove stale %s: %w", name, err)
		}
	}
	con, err := hypervisor.StartConsole(filepath.Join(dir, consolePipeName), filepath.Join(dir, consoleLogName), v.cfg.ConsoleLogMax)
	if err != nil {
		return fmt.Errorf("clh: %w", err)
	}
	v.mu.Lock()
	v.console = con // closed by reap, or by removeState if the VMM never ran
	v.mu.Unlock()
	logf, err := os.OpenFile(filepath.Join(dir, vmmLogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("clh: vmm log: %w", err)
	}
	defer logf.Close() // the child keeps its own copy

	// The VMM logs to stderr when --log-file is absent; sending stderr to
	// the log file also catches what it prints before logging starts.
	cmd := exec.Command(v.cfg.Path, "--api-socket", "path="+v.api.socket)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Tethered: the VMM dies with the shim. tether forks from one thread
	// that lives as long as the process, so the parent-death signal (which
	// follows the forking thread, golang/go#27505) fires only when the shim
	// itself ends. The sandbox's cleanup after a shim crash still finds a
	// VMM by its argv, which names the state directory.
	if err := tether.Start(cmd); err != nil {
		return fmt.Errorf("clh: start %s: %w", v.cfg.Path, err)
	}
	done := make(chan struct{})
	v.mu.Lock()
	v.pid = cmd.Process.Pid
	v.done = done
	raced := v.state == stopped
	v.mu.Unlock()
	go v.reap(cmd, done)
	if raced {
		// Stop ran while we were launching and found no process to stop;
		// the caller's cleanup stops this one.
		return fmt.Errorf("clh: vm %s: stopped while starting: %w", v.cfg.ID, errdefs.ErrAborted)
	}
	return nil
}

// reap waits for the process and records why it ended.
func (v *VM) reap(cmd *exec.Cmd, done chan struct{}) {
	err := cmd.Wait()
	st := hypervisor.ExitStatus{ExitedAt: time.Now()}
	v.mu.Lock()
	stopping := v.stopping
	v.mu.Unlock()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		st.Code = 128 + int(ws.Signal())
		st.Reason = fmt.Sprintf("killed by signal %d", ws.Signal())
		if stopping && ws.Signal() == syscall.SIGKILL {
			st.Reason += " at the stop deadline"
		}
	case cmd.ProcessState.ExitCode() == 0 && stopping:
		st.Reason = "shut down by request"
	case cmd.ProcessState.ExitCode() == 0:
		// The VMM exits 0 by itself only when the guest powers off.
		st.Reason = "guest powered off"
	default:
		st.Code = cmd.ProcessState.ExitCode()
		st.Reason = fmt.Sprintf("cloud-hypervisor exited with code %d", st.Code)
		if last := lastLine(filepath.Join(v.cfg.StateDir, vmmLogName)); last != "" {
			st.Reason += ": " + last
		}
	}
	if err != nil && cmd.ProcessState == nil {
		st.Reason = err.Error()
	}
	v.mu.Lock()
	v.exit = st
	con := v.console
	v.mu.Unlock()
	// The console log is complete before anyone learns that the VMM exited.
	con.Close()
	close(done)
}

// boot waits for the API, then creates the VM, adds its NICs and boots it.
func (v *VM) boot(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultAPIWait)
		defer cancel()
	}
	if err := v.waitAPI(ctx); err != nil {
		return err
	}
	if err := v.api.put(ctx, "vm.create", v.plan.body, nil); err != nil {
		return err
	}
	if err := v.addNICs(ctx); err != nil {
		return err
	}
	return v.api.put(ctx, "vm.boot", nil, nil)
}

// waitAPI polls vmm.ping until it answers, the process exits or ctx ends.
func (v *VM) waitAPI(ctx context.Context) error {
	start := time.Now()
	backoff := 5 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := v.api.ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		var (
			apiErr *apiError
			bad    *badAnswer
		)
		if errors.As(err, &apiErr) || errors.As(err, &bad) {
			return err // it answered, badly: retrying will not help
		}
		t := time.NewTimer(backoff)
		select {
		case <-v.exited():
			t.Stop()
			return fmt.Errorf("cloud-hypervisor exited before its API answered (%s)", v.exitStatus().Reason)
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cloud-hypervisor API %s did not answer vmm.ping within %s: %w (last error: %v)",
				v.api.socket, time.Since(start).Round(time.Millisecond), ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// exited returns a channel closed when the process has exited; nil (never
// ready) when no process was started.
func (v *VM) exited() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.done
}

func (v *VM) exitStatus() hypervisor.ExitStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.exit
}

// Stop asks the VMM to shut the VM and itself down, kills it at ctx's
// deadline (or after a default grace period when ctx has none), and removes
// the state directory. Stopping a stopped VM only re-checks the directory.
func (v *VM) Stop(ctx context.Context) error {
	v.mu.Lock()
	v.state = stopped
	v.stopping = true
	done := v.done
	v.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		default:
			v.shutdown(ctx, done)
		}
	}
	return v.removeState()
}

// shutdown runs vm.shutdown → vmm.shutdown → SIGKILL.
func (v *VM) shutdown(ctx context.Context, done <-chan struct{}) {
	l := log.G(ctx).WithField("vm", v.cfg.ID)
	gctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		gctx, cancel = context.WithTimeout(ctx, defaultStopGrace)
		defer cancel()
	}
	if gctx.Err() == nil {
		// Errors are expected here (VM never booted: 404/405; VMM exiting
		// while answering): the process exit is what counts.
		if err := v.api.put(gctx, "vm.shutdown", nil, nil); err != nil {
			l.WithError(err).Debug("vm.shutdown")
		}
		if err := v.api.put(gctx, "vmm.shutdown", nil, nil); err != nil {
			l.WithError(err).Debug("vmm.shutdown")
		}
	}
	select {
	case <-done:
		return
	case <-gctx.Done():
	}
	v.mu.Lock()
	pid := v.pid
	v.mu.Unlock()
	l.WithField("pid", pid).Warn("cloud-hypervisor did not exit in time; killing it")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		l.WithError(err).Error("kill cloud-hypervisor")
	}
	<-done
}

// cleanup is Stop for a failed Start.
func (v *VM) cleanup(ctx context.Context) {
	if err := v.Stop(context.WithoutCancel(ctx)); err != nil {
		log.G(ctx).WithError(err).WithField("vm", v.cfg.ID).Warn("clean up after failed start")
	}
}

func (v *VM) removeState() error {
	v.mu.Lock()
	con := v.console
	v.mu.Unlock()
	con.Close()
	if err := os.RemoveAll(v.cfg.StateDir); err != nil {
		return fmt.Errorf("clh: remove state directory: %w", err)
	}
	return nil
}

// Wait blocks until the VMM has exited and says why.
func (v *VM) Wait(ctx context.Context) (hypervisor.ExitStatus, error) {
	done := v.exited()
	if done == nil {
		return hypervisor.ExitStatus{}, fmt.Errorf("clh: vm %s: wait: not started: %w", v.cfg.ID, errdefs.ErrFailedPrecondition)
	}
	select {
	case <-done:
		return v.exitStatus(), nil
	case <-ctx.Done():
		return hypervisor.ExitStatus{}, ctx.Err()
	}
}

// running returns the exit channel if the VMM process is up, or an
// ErrFailedPrecondition naming the operation.
func (v *VM) running(op string) (<-chan struct{}, error) {
	v.mu.Lock()
	state, done, exit := v.state, v.done, v.exit
	v.mu.Unlock()
	if state != running || done == nil {
		return nil, fmt.Errorf("clh: vm %s: %s: not running: %w", v.cfg.ID, op, errdefs.ErrFailedPrecondition)
	}
	select {
	case <-done:
		return nil, fmt.Errorf("clh: vm %s: %s: cloud-hypervisor has exited (%s): %w", v.cfg.ID, op, exit.Reason, errdefs.ErrFailedPrecondition)
	default:
	}
	return done, nil
}

// Dial connects to a guest vsock port through the hybrid vsock socket,
// retrying until ctx is done (or, when ctx has no deadline, for the
// config's BootTimeout) or the VMM exits.
func (v *VM) Dial(ctx context.Context, port uint32) (net.Conn, error) {
	done, err := v.running("dial")
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok && v.cfg.BootTimeout > 0 {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeout(ctx, v.cfg.BootTimeout)
		defer cancelT()
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-dctx.Done():
		}
	}()
	conn, err := v.dial(dctx, filepath.Join(v.cfg.StateDir, vsockSocketName), port)
	if err == nil {
		return conn, nil
	}
	select {
	case <-done:
		err = fmt.Errorf("%w; cloud-hypervisor exited (%s)", err, v.exitStatus().Reason)
	default:
	}
	return nil, fmt.Errorf("clh: vm %s: %w%s", v.cfg.ID, err, consoleTail(filepath.Join(v.cfg.StateDir, consoleLogName)))
}

// ListenGuest accepts guest-initiated connections to host port port: Cloud
// Hypervisor forwards them to the unix socket <vsock socket>_<port>.
func (v *VM) ListenGuest(port uint32) (net.Listener, error) {
	path := fmt.Sprintf("%s_%d", filepath.Join(v.cfg.StateDir, vsockSocketName), port)
	os.Remove(path)
	return net.Listen("unix", path)
}

// AddDisk hot-plugs a virtio-blk disk (PUT vm.add-disk); the guest finds it
// by the serial, which is the disk id.
func (v *VM) AddDisk(ctx context.Context, d hypervisor.Disk) error {
	dc, err := diskFor(d, checkHostFile)
	if err != nil {
		return err
	}
	if _, err := v.running("add disk"); err != nil {
		return err
	}
	v.mu.Lock()
	dup := v.hotplug[d.ID]
	v.mu.Unlock()
	if dup {
		return fmt.Errorf("clh: vm %s: disk %q is already attached: %w", v.cfg.ID, d.ID, errdefs.ErrAlreadyExists)
	}
	var info pciDeviceInfo
	if err := v.api.put(ctx, "vm.add-disk", dc, &info); err != nil {
		return fmt.Errorf("clh: vm %s: add disk %q: %w", v.cfg.ID, d.ID, err)
	}
	v.mu.Lock()
	v.hotplug[d.ID] = true
	v.mu.Unlock()
	log.G(ctx).WithField("vm", v.cfg.ID).WithField("disk", d.ID).WithField("bdf", info.BDF).Debug("disk attached")
	return nil
}

// RemoveDisk detaches a disk added with AddDisk (PUT vm.remove-device).
func (v *VM) RemoveDisk(ctx context.Context, id string) error {
	if _, err := v.running("remove disk"); err != nil {
		return err
	}
	v.mu.Lock()
	known := v.hotplug[id]
	v.mu.Unlock()
	if !known {
		return fmt.Errorf("clh: vm %s: disk %q was not added with AddDisk: %w", v.cfg.ID, id, errdefs.ErrNotFound)
	}
	if err := v.api.put(ctx, "vm.remove-device", diskRemove{ID: id}, nil); err != nil {
		return fmt.Errorf("clh: vm %s: remove disk %q: %w", v.cfg.ID, id, err)
	}
	v.mu.Lock()
	delete(v.hotplug, id)
	v.mu.Unlock()
	return nil
}

// logTail quotes the end of the VMM log for an error message.
func (v *VM) logTail() string {
	t := tail(filepath.Join(v.cfg.StateDir, vmmLogName), tailLines)
	if t == "" {
		return ""
	}
	return "\ncloud-hypervisor log tail:\n" + t
}

func consoleTail(path string) string {
	t := tail(path, tailLines)
	if t == "" {
		return "\nconsole tail: (empty)"
	}
	return "\nconsole tail:\n" + t
}

// tail returns the last n lines of a file, or "" if it is missing or empty.
func tail(path string, n int) string {
	t, _ := hypervisor.Tail(path, n)
	return strings.TrimSpace(t)
}

func lastLine(path string) string { return tail(path, 1) }
