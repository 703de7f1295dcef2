package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Stop budget when ctx has no deadline, and how long the guest gets to
// power off on its own before QEMU is told to quit. The guest agent is PID 1
// and may ignore the ACPI power button, so the graceful phase is short.
const (
	defaultStopTimeout = 10 * time.Second
	powerdownGrace     = time.Second
)

// Stop powers the guest down (system_powerdown), then asks QEMU to quit,
// then kills it at ctx's deadline; it then stops the vsock daemon and
// removes StateDir. It is idempotent; concurrent calls wait for the first.
func (v *VM) Stop(ctx context.Context) error {
	v.mu.Lock()
	if v.stopDone != nil {
		done := v.stopDone
		v.mu.Unlock()
		select {
		case <-done:
			v.mu.Lock()
			defer v.mu.Unlock()
			return v.stopErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	v.stopDone = make(chan struct{})
	v.stopped = true
	started := v.cmd != nil
	v.mu.Unlock()

	var err error
	if started {
		err = v.shutdown(ctx)
	}
	v.mu.Lock()
	if terr := v.teardownLocked(ctx); terr != nil {
		err = errors.Join(err, terr)
	}
	v.stopErr = err
	close(v.stopDone)
	v.mu.Unlock()
	return err
}

// Quit ends QEMU through QMP "quit" and waits for it to exit; the guest is
// not asked. Without a monitor (or if QEMU ignores it) Stop escalates as
// usual.
func (v *VM) Quit(ctx context.Context) error {
	if !v.running() {
		return nil
	}
	mon := v.mon.Load()
	if mon == nil {
		return errors.New("qemu: quit: no QMP connection")
	}
	if err := mon.run(ctx, "quit", nil, nil); err != nil && !isClosedConn(err) {
		return fmt.Errorf("qemu: quit: %w", err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(powerdownGrace)
	}
	if !v.waitExit(deadline) {
		return errors.New("qemu: quit: QEMU still running")
	}
	return nil
}

// shutdown makes QEMU exit, escalating at each step.
func (v *VM) shutdown(ctx context.Context) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultStopTimeout)
	}
	lg := log.G(ctx).WithField("vm", v.plan.cfg.ID)
	if !v.running() {
		return nil
	}
	if mon := v.mon.Load(); mon != nil {
		grace := min(powerdownGrace, time.Until(deadline)/3)
		cctx, cancel := context.WithTimeout(ctx, grace)
		if err := mon.run(cctx, "system_powerdown", nil, nil); err != nil {
			lg.WithError(err).Debug("qemu: system_powerdown")
		}
		cancel()
		if !v.waitExit(time.Now().Add(grace)) {
			// quit ends QEMU without involving the guest.
			qctx, cancel := context.WithDeadline(ctx, deadline)
			if err := mon.run(qctx, "quit", nil, nil); err != nil && !isClosedConn(err) {
				lg.WithError(err).Debug("qemu: quit")
			}
			cancel()
		}
	}
	if v.waitExit(deadline) {
		return nil
	}
	lg.Warn("qemu: did not exit by the stop deadline, killing it")
	v.killed.Store(true)
	if err := v.cmd.Process.Kill(); err != nil && v.running() {
		return fmt.Errorf("kill QEMU pid %d: %w", v.cmd.Process.Pid, err)
	}
	<-v.exited
	return nil
}

// waitExit waits for QEMU to exit until deadline.
func (v *VM) waitExit(deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-v.exited:
		return true
	case <-t.C:
		return !v.running()
	}
}

// teardownLocked releases everything the VM holds on the host. QEMU must
// have exited, or is killed here (Start failing half-way). Callers hold mu.
func (v *VM) teardownLocked(ctx context.Context) error {
	if v.cmd != nil && v.running() {
		v.killed.Store(true)
		_ = v.cmd.Process.Kill()
		v.mu.Unlock()
		<-v.exited
		v.mu.Lock()
	}
	if mon := v.mon.Load(); mon != nil {
		mon.close()
	}
	v.daemon.stop(time.Second)
	v.backend.Close()
	v.console.Close()
	if v.cid != nil {
		_ = v.cid.Close()
	}
	if v.cmd == nil {
		// reap never ran: nobody else closes exited.
		select {
		case <-v.exited:
		default:
			close(v.exited)
		}
	}
	// OpenRAM's mount is detached at once; only a shim killed in between
	// leaves it.
	_ = unix.Unmount(ramDir(v.plan.cfg.StateDir), unix.MNT_DETACH)
	if err := os.RemoveAll(v.plan.cfg.StateDir); err != nil {
		log.G(ctx).WithError(err).Warn("qemu: removing state dir")
		return fmt.Errorf("remove state dir: %w", err)
	}
	return nil
}
