package task

import (
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/shim/hostio"
)

// status is the host's view of a process. Requests move it forward
// (created → starting → running) and guest events move it too (running ⇄
// paused, any → stopped); deleted processes leave the table.
type status int

const (
	created status = iota
	starting
	running
	paused
	stopped
)

func (s status) String() string {
	return [...]string{"created", "starting", "running", "paused", "stopped"}[s]
}

func (s status) api() task.Status {
	switch s {
	case created:
		return task.Status_CREATED
	case starting, running:
		return task.Status_RUNNING
	case paused:
		return task.Status_PAUSED
	default:
		return task.Status_STOPPED
	}
}

// proc is one container init process or exec.
type proc struct {
	execID     string
	status     status
	io         *hostio.Process // nil until the host stdio is open
	stdin      string          // host stdio paths, for State and events
	stdout     string
	stderr     string
	terminal   bool
	exitStatus uint32
	exitedAt   time.Time
	exited     chan struct{} // closed once stopped and its TaskExit is published
}

func newProc(execID string) *proc {
	return &proc{execID: execID, exited: make(chan struct{})}
}

// container is one task and its execs.
type container struct {
	id        string
	bundle    string
	rootfs    []*types.Mount
	isSandbox bool
	init      *proc
	execs     map[string]*proc
	// deleteSeen is set once the guest's TaskDelete for the container has
	// been checked, so that remove knows whether one may still trail it.
	deleteSeen bool
}

// table is the host-side record of every task and exec. It answers
// NotFound, AlreadyExists and FailedPrecondition before a request reaches
// the guest; the guest still enforces everything itself.
type table struct {
	mu         sync.Mutex
	containers map[string]*container
	// deleted names the last few containers removed before their guest
	// TaskDelete was seen: the guest publishes it while it answers Delete,
	// and the event may reach the host after the record is gone. Each
	// name admits one TaskDelete.
	deleted []string
}

// maxDeleted bounds table.deleted: containerd deletes containers one at a
// time, so only the last few can have a TaskDelete in flight.
const maxDeleted = 32

func newTable() *table {
	return &table{containers: make(map[string]*container)}
}

func (t *table) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.containers)
}

// reserve adds a container in state created before the guest is asked, so
// that the guest's events for it always find it.
func (t *table) reserve(c *container) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.containers[c.id]; ok {
		return fmt.Errorf("container %s: %w", c.id, errdefs.ErrAlreadyExists)
	}
	c.init = newProc("")
	c.execs = make(map[string]*proc)
	t.containers[c.id] = c
	t.forgetDeletedLocked(c.id)
	return nil
}

// get finds a process; execID "" is the init process.
func (t *table) get(id, execID string) (*container, *proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.getLocked(id, execID)
}

func (t *table) getLocked(id, execID string) (*container, *proc, error) {
	c, ok := t.containers[id]
	if !ok {
		return nil, nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %s in container %s: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// addExec reserves an exec id in a container whose init has not exited.
func (t *table) addExec(id, execID string) (*proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" || execID == id {
		return nil, fmt.Errorf("exec id %q: must be non-empty and differ from the container id: %w", execID, errdefs.ErrInvalidArgument)
	}
	if _, ok := c.execs[execID]; ok {
		return nil, fmt.Errorf("exec %s in container %s: %w", execID, id, errdefs.ErrAlreadyExists)
	}
	if c.init.status == stopped {
		return nil, fmt.Errorf("container %s has exited, cannot exec in it: %w", id, errdefs.ErrFailedPrecondition)
	}
	p := newProc(execID)
	c.execs[execID] = p
	return p, nil
}

// beginStart moves a created process to starting.
func (t *table) beginStart(id, execID string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, p, err := t.getLocked(id, execID)
	if err != nil {
		return err
	}
	if execID != "" && c.init.status == stopped {
		return fmt.Errorf("container %s init process is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	if p.status != created {
		return fmt.Errorf("%s is %s, cannot start it: %w", name(id, execID), p.status, errdefs.ErrFailedPrecondition)
	}
	p.status = starting
	return nil
}

// endStart records the result of a start; an exit seen meanwhile wins.
func (t *table) endStart(id, execID string, ok bool) {
	t.setStatus(id, execID, func(s status) (status, bool) {
		switch {
		case s != starting:
			return s, false
		case ok:
			return running, true
		default:
			return created, true
		}
	})
}

// setStatus applies f to a process's status under the lock; unknown
// processes are ignored (events may name processes already deleted).
func (t *table) setStatus(id, execID string, f func(status) (status, bool)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, p, err := t.getLocked(id, execID)
	if err != nil || p.status == stopped {
		return
	}
	if s, ok := f(p.status); ok {
		p.status = s
	}
}

// checkStatus fails with FailedPrecondition unless the process is in one of want.
func (t *table) checkStatus(id, execID, verb string, want ...status) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, p, err := t.getLocked(id, execID)
	if err != nil {
		return err
	}
	for _, w := range want {
		if p.status == w {
			return nil
		}
	}
	return fmt.Errorf("%s is %s, cannot %s it: %w", name(id, execID), p.status, verb, errdefs.ErrFailedPrecondition)
}

// exit records a process's exit. An exit for a process the table does not
// know, or a second exit for one, is an error: a guest that reports it is
// lying, and containerd must not hear it. Waiters are released by the
// returned func, which the caller runs once the TaskExit is published:
// containerd must never see Wait return before the exit it reports.
func (t *table) exit(id, execID string, code uint32, at time.Time) (release func(), err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, p, err := t.getLocked(id, execID)
	if err != nil {
		return nil, err
	}
	if p.status == stopped {
		return nil, fmt.Errorf("%s has already exited: %w", name(id, execID), errdefs.ErrFailedPrecondition)
	}
	p.status, p.exitStatus, p.exitedAt = stopped, code, at
	return func() { close(p.exited) }, nil
}

// known fails with NotFound unless the table has the process.
func (t *table) known(id, execID string) error {
	_, _, err := t.get(id, execID)
	return err
}

// deleteEvent admits a guest TaskDelete: for a process the table has, or
// once for a container removed before its TaskDelete arrived.
func (t *table) deleteEvent(id, execID string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, _, err := t.getLocked(id, execID)
	if err == nil {
		if execID == "" {
			c.deleteSeen = true
		}
		return nil
	}
	if execID == "" && t.forgetDeletedLocked(id) {
		return nil
	}
	return err
}

// forgetDeletedLocked removes id from t.deleted and reports whether it was there.
func (t *table) forgetDeletedLocked(id string) bool {
	for i, d := range t.deleted {
		if d == id {
			t.deleted = append(t.deleted[:i], t.deleted[i+1:]...)
			return true
		}
	}
	return false
}

// exitAll stops every process still alive (the VM is gone).
func (t *table) exitAll(code uint32, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.containers {
		for _, p := range c.procs() {
			if p.status != stopped {
				p.status, p.exitStatus, p.exitedAt = stopped, code, at
				close(p.exited)
			}
		}
	}
}

// remove deletes a process; removing init removes the container and its
// execs. It returns the host stdio to release.
func (t *table) remove(id, execID string) []*hostio.Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.containers[id]
	if !ok {
		return nil
	}
	var ios []*hostio.Process
	if execID != "" {
		if p, ok := c.execs[execID]; ok {
			delete(c.execs, execID)
			ios = append(ios, p.io)
		}
		return ios
	}
	for _, p := range c.procs() {
		ios = append(ios, p.io)
	}
	delete(t.containers, id)
	if !c.deleteSeen {
		if len(t.deleted) == maxDeleted {
			t.deleted = t.deleted[1:]
		}
		t.deleted = append(t.deleted, id)
	}
	return ios
}

// process is the live record of a process, for waiting on its exit.
func (t *table) process(id, execID string) (*proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, p, err := t.getLocked(id, execID)
	return p, err
}

// snapshot copies a process record for reading without the lock.
func (t *table) snapshot(id, execID string) (container, proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, p, err := t.getLocked(id, execID)
	if err != nil {
		return container{}, proc{}, err
	}
	return *c, *p, nil
}

func (c *container) procs() []*proc {
	ps := []*proc{c.init}
	for _, e := range c.execs {
		ps = append(ps, e)
	}
	return ps
}

func name(id, execID string) string {
	if execID == "" {
		return "container " + id
	}
	return "exec " + execID + " in container " + id
}
