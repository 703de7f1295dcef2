package task

// Guest events, checked against the table and turned into the host's view.

import (
	"context"
	"fmt"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/sandbox"
)

// observe checks a guest event against the table, updates the table from it
// and rewrites it into the host's view (host bundle and stdio, the VMM's pid)
// before it is published. An event that names a container or exec this shim
// does not have (or a second exit) is an error: the pod drops it. For an
// exit it returns what releases the process's waiters once it is published.
func (s *Service) observe(ev *sandbox.Event) (published func(), err error) {
	pid := s.pod.VMMPid()
	switch m := ev.Message.(type) {
	case *eventstypes.TaskCreate:
		c, p, err := s.table.snapshot(m.ContainerID, "")
		if err != nil {
			return nil, err
		}
		m.Bundle, m.Rootfs = c.bundle, c.rootfs
		m.IO = &eventstypes.TaskIO{Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal}
		m.Checkpoint = ""
		m.Pid = pid
	case *eventstypes.TaskStart:
		if err := s.table.known(m.ContainerID, ""); err != nil {
			return nil, err
		}
		s.table.setStatus(m.ContainerID, "", toRunning)
		m.Pid = pid
	case *eventstypes.TaskExecAdded:
		return nil, s.table.known(m.ContainerID, m.ExecID)
	case *eventstypes.TaskExecStarted:
		if err := s.table.known(m.ContainerID, m.ExecID); err != nil {
			return nil, err
		}
		s.table.setStatus(m.ContainerID, m.ExecID, toRunning)
		m.Pid = pid
	case *eventstypes.TaskExit:
		at := time.Now()
		if m.ExitedAt != nil {
			at = m.ExitedAt.AsTime()
		}
		release, err := s.table.exit(m.ContainerID, execOf(m.ContainerID, m.ID), m.ExitStatus, at)
		if err != nil {
			return nil, err
		}
		m.Pid = pid
		return release, nil
	case *eventstypes.TaskOOM:
		return nil, s.table.known(m.ContainerID, "")
	case *eventstypes.TaskPaused:
		if err := s.table.known(m.ContainerID, ""); err != nil {
			return nil, err
		}
		s.table.setStatus(m.ContainerID, "", func(st status) (status, bool) { return paused, st == running })
	case *eventstypes.TaskResumed:
		if err := s.table.known(m.ContainerID, ""); err != nil {
			return nil, err
		}
		s.table.setStatus(m.ContainerID, "", func(st status) (status, bool) { return running, st == paused })
	case *eventstypes.TaskDelete:
		if err := s.table.deleteEvent(m.ContainerID, execOf(m.ContainerID, m.ID)); err != nil {
			return nil, err
		}
		m.Pid = pid
	default:
		return nil, fmt.Errorf("%T is not a task event: %w", ev.Message, errdefs.ErrInvalidArgument)
	}
	return nil, nil
}

// execOf maps an event's process id to the table's exec id: the init
// process is named by the container id (runc's TaskExit) or by nothing
// (runc's TaskDelete).
func execOf(containerID, id string) string {
	if id == containerID {
		return ""
	}
	return id
}

// reconcile marks every process stopped once the VM is gone and every event
// it left has been handled: a process with no exit event by then died with
// the VM (the sandbox should have reported it; this is the safety net).
func (s *Service) reconcile() {
	if s.vmGone() {
		s.table.exitAll(exitVMGone, time.Now())
	}
}

// awaitVMGone waits up to d for the VM to be gone: a guest call that fails
// because the VM just died may return before the sandbox has closed its
// events.
func (s *Service) awaitVMGone(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.pod.Forwarded():
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// vmGone is true once the sandbox closed its event channel.
func (s *Service) vmGone() bool {
	select {
	case <-s.pod.Forwarded():
		return true
	default:
		return false
	}
}
