package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/log"

	"github.com/coco-runtime/coco/hypervisor/tether"
)

// daemon is the per-VM vhost-device-vsock process: QEMU's
// vhost-user-vsock-pci connects to its control socket, and the host reaches
// guest ports through its hybrid-vsock socket.
type daemon struct {
	cmd  *exec.Cmd
	log  string // its stdout and stderr
	done chan struct{}
	err  error // cmd.Wait's result, valid after done is closed
}

// startDaemon launches vhost-device-vsock and waits for its vhost-user
// socket to appear, so QEMU finds it on its first connect attempt.
func startDaemon(ctx context.Context, bin string, cid uint32, vhostUser, hybrid, logPath string) (*daemon, error) {
	// A socket file left by a VM that crashed in this state dir would look
	// like a ready daemon below; start from a clean slate.
	for _, s := range []string{vhostUser, hybrid} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Top-level flags describe a single device, which is all a per-VM daemon
	// serves (0.3.0 also accepts --vm key=value lists for several guests).
	cmd := exec.Command(bin,
		"--guest-cid", strconv.FormatUint(uint64(cid), 10),
		"--socket", vhostUser,
		"--uds-path", hybrid)
	d := &daemon{cmd: cmd, log: logPath, done: make(chan struct{})}
	logf, err := openProcessLog(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own process group: a terminal's Ctrl-C aimed at the shim must not
	// take the daemon down under a running VM. Tethered: it dies with the
	// shim, whatever ends the shim.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = tether.Start(cmd)
	logf.Close() // the daemon has its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	tick := time.NewTicker(time.Millisecond) // a stat per tick; the daemon takes a few ms
	defer tick.Stop()
	for {
		if fi, err := os.Stat(vhostUser); err == nil && fi.Mode().Type() == os.ModeSocket {
			log.G(ctx).WithField("pid", cmd.Process.Pid).Debug("qemu: vhost-device-vsock ready")
			return d, nil
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("%s exited before creating %s: %v: %s", bin, vhostUser, d.err, processLogTail(d.log))
		case <-ctx.Done():
			d.stop(time.Second)
			return nil, fmt.Errorf("%s did not create %s: %w: %s", bin, vhostUser, ctx.Err(), processLogTail(d.log))
		case <-tick.C:
		}
	}
}

// stop ends the daemon: SIGTERM, then SIGKILL after grace. It returns once
// the process has been reaped.
func (d *daemon) stop(grace time.Duration) {
	if d == nil {
		return
	}
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(grace):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}
