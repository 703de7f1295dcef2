// Package tether starts the processes a pod's VM is made of (the VMM and its
// helpers, such as vhost-device-vsock) so that they cannot outlive the shim:
// each gets PR_SET_PDEATHSIG = SIGKILL. However the shim ends — a clean exit
// after its pod stopped, a panic, SIGKILL from an operator or from
// containerd's `delete` — the kernel kills the VM with it, so no QEMU is ever
// left re-parented to init with nobody to stop it or to remove its state.
//
// The kernel sends the parent-death signal when the *thread* that forked the
// child exits, not the process (prctl(2); golang/go#27505). Go moves
// goroutines between threads and ends a thread when a goroutine locked to it
// exits without unlocking (the pod's network code does that on a thread it
// could not return to its own namespace). So every start here runs on one
// OS thread that a goroutine locks and never releases: that thread lives
// exactly as long as the process.
package tether

import (
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// starter is the one locked thread of this process that forks tethered
// children. It is per process by nature (the parent-death signal follows
// the forking thread's lifetime), hence package-level.
var starter struct {
	once sync.Once
	reqs chan request
}

type request struct {
	cmd  *exec.Cmd
	done chan error
}

// Start starts cmd with SIGKILL as its parent-death signal, from a thread
// that lives as long as this process. It keeps cmd's other SysProcAttr
// settings (e.g. Setpgid). It is cmd.Start otherwise: the caller Waits.
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if cmd.SysProcAttr.Pdeathsig != 0 && cmd.SysProcAttr.Pdeathsig != syscall.SIGKILL {
		return fmt.Errorf("tether: %s already has parent-death signal %s", cmd.Path, cmd.SysProcAttr.Pdeathsig)
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	starter.once.Do(func() {
		starter.reqs = make(chan request)
		go serve(starter.reqs)
	})
	r := request{cmd: cmd, done: make(chan error, 1)}
	starter.reqs <- r
	return <-r.done
}

// serve forks every tethered child from its own thread, which it never
// unlocks and never leaves: the goroutine (and so the thread) ends only
// with the process.
func serve(reqs <-chan request) {
	runtime.LockOSThread()
	for r := range reqs {
		r.done <- r.cmd.Start()
	}
}
