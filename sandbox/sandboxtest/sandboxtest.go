// Package sandboxtest is a fake sandbox.Sandbox for unit tests of the shim:
// no VM, an in-memory "guest" whose processes behave according to their
// argv, emitting the task events a real guest emits, in a real guest's order
// (a container's execs exit before its init).
//
// Process behaviour, chosen by args[0]:
//
//	echo WORDS...  prints WORDS and a newline, exits 0
//	cat            copies stdin to stdout until EOF, exits 0
//	exit N         exits with status N right after start
//	fail-start     Start fails
//	anything else  runs until killed; a signal S gives exit status 128+S
package sandboxtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/sandbox"
)

// MarkerFile is written into the state directory by Start, so tests can see
// that `delete` cleaned up; ConfigFile records the configuration's Path.
const (
	MarkerFile = "fake-vm"
	ConfigFile = "config-path"
)

// Factory makes fake sandboxes and remembers them.
type Factory struct {
	// PID is reported as the VMM pid.
	PID int
	// StartErr, when set, is returned by every Start.
	StartErr error

	mu        sync.Mutex
	sandboxes []*Sandbox
}

// New is a sandbox.Factory.
func (f *Factory) New(ctx context.Context, opts sandbox.Options) (sandbox.Sandbox, error) {
	if opts.ID == "" || opts.StateDir == "" {
		return nil, fmt.Errorf("fake sandbox: options need ID and StateDir: %w", errdefs.ErrInvalidArgument)
	}
	s := &Sandbox{
		Opts:       opts,
		pid:        f.PID,
		startErr:   f.StartErr,
		events:     make(chan sandbox.Event, 1024),
		exited:     make(chan struct{}),
		containers: map[string]*container{},
	}
	f.mu.Lock()
	f.sandboxes = append(f.sandboxes, s)
	f.mu.Unlock()
	return s, nil
}

// Sandboxes returns every sandbox made so far.
func (f *Factory) Sandboxes() []*Sandbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Sandbox(nil), f.sandboxes...)
}

// Cleanup is a stand-in for sandbox.Cleanup: it removes the state directory.
func Cleanup(_ context.Context, dir string) error {
	return os.RemoveAll(dir)
}

// Sandbox is the fake pod VM.
type Sandbox struct {
	Opts     sandbox.Options
	pid      int
	startErr error

	calls atomic.Int64 // guest task API calls

	mu         sync.Mutex
	started    bool
	stopped    bool
	events     chan sandbox.Event
	exited     chan struct{}
	exit       hypervisor.ExitStatus
	containers map[string]*container
	created    map[string]sandbox.Container // what CreateTask was told, by id
}

type container struct {
	id    string
	init  *proc
	execs map[string]*proc
	order []string // exec ids in creation order
}

type proc struct {
	id      string // container id for init, else exec id
	args    []string
	io      sandbox.IO
	status  string // created, running, paused, stopped
	code    uint32
	at      time.Time
	done    chan struct{}
	outOnce sync.Once
}

// Start "boots" the VM.
func (s *Sandbox) Start(ctx context.Context) error {
	if s.startErr != nil {
		return s.startErr
	}
	if err := os.MkdirAll(s.Opts.StateDir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Opts.StateDir, MarkerFile), []byte(s.Opts.ID), 0o600); err != nil {
		return err
	}
	path := ""
	if s.Opts.Config != nil {
		path = s.Opts.Config.Path
	}
	if err := os.WriteFile(filepath.Join(s.Opts.StateDir, ConfigFile), []byte(path), 0o600); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("fake sandbox started twice: %w", errdefs.ErrFailedPrecondition)
	}
	s.started = true
	return nil
}

// emit queues an event; callers hold s.mu so events keep their order.
func (s *Sandbox) emit(msg any) {
	if s.stopped {
		return
	}
	s.events <- sandbox.Event{Message: msg}
}

// CreateTask creates a container whose init runs the spec's args.
// RefusedByGuest, as a container's first argument, makes the fake guest
// refuse its creation (as a policy or a failed image pull would).
const RefusedByGuest = "refused-by-guest"

// Created is what CreateTask was told about container id.
func (s *Sandbox) Created(id string) (sandbox.Container, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.created[id]
	return c, ok
}

func (s *Sandbox) CreateTask(ctx context.Context, r *taskAPI.CreateTaskRequest, ctr sandbox.Container, pio sandbox.IO) (*taskAPI.CreateTaskResponse, error) {
	if ctr.Parsed == nil {
		return nil, fmt.Errorf("container %s: no config.json: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	var args []string
	if ctr.Parsed.Process != nil {
		args = ctr.Parsed.Process.Args
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.up(); err != nil {
		return nil, err
	}
	if _, ok := s.containers[r.ID]; ok {
		return nil, fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	if len(args) > 0 && args[0] == RefusedByGuest {
		return nil, fmt.Errorf("container %s: refused by the guest: %w", r.ID, errdefs.ErrPermissionDenied)
	}
	c := &container{id: r.ID, init: newProc(r.ID, args, pio), execs: map[string]*proc{}}
	s.containers[r.ID] = c
	if s.created == nil {
		s.created = map[string]sandbox.Container{}
	}
	s.created[r.ID] = ctr
	s.emit(&eventstypes.TaskCreate{ContainerID: r.ID, Bundle: "/run/guest/" + r.ID, Pid: 1000})
	return &taskAPI.CreateTaskResponse{Pid: 1000}, nil
}

// Exec adds an exec whose args come from the request's process spec.
func (s *Sandbox) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest, pio sandbox.IO) error {
	var p specs.Process
	if r.Spec != nil {
		if err := json.Unmarshal(r.Spec.GetValue(), &p); err != nil {
			return fmt.Errorf("exec spec: %v: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.up(); err != nil {
		return err
	}
	c, ok := s.containers[r.ID]
	if !ok {
		return fmt.Errorf("container %s: %w", r.ID, errdefs.ErrNotFound)
	}
	if _, ok := c.execs[r.ExecID]; ok {
		return fmt.Errorf("exec %s: %w", r.ExecID, errdefs.ErrAlreadyExists)
	}
	c.execs[r.ExecID] = newProc(r.ExecID, p.Args, pio)
	c.order = append(c.order, r.ExecID)
	s.emit(&eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return nil
}

func newProc(id string, args []string, pio sandbox.IO) *proc {
	return &proc{id: id, args: args, io: pio, status: "created", done: make(chan struct{})}
}

func (s *Sandbox) up() error {
	if !s.started || s.stopped {
		return fmt.Errorf("fake VM is not running: %w", errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Task is the fake guest's task service.
func (s *Sandbox) Task() taskAPI.TTRPCTaskService { return (*guest)(s) }

// GuestCalls counts the calls made to the guest task API.
func (s *Sandbox) GuestCalls() int64 { return s.calls.Load() }

// Events delivers the fake guest's events.
func (s *Sandbox) Events() <-chan sandbox.Event { return s.events }

// OOM makes the fake guest report an OOM kill notice for a container.
func (s *Sandbox) OOM(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.emit(&eventstypes.TaskOOM{ContainerID: id})
}

// Inject queues an event exactly as given, as a hostile guest could send it:
// any type, any topic, any ids.
func (s *Sandbox) Inject(ev sandbox.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.events <- ev
	}
}

// Crash simulates the VM dying: every live process exits with 137, execs
// before their init, then the event channel closes.
func (s *Sandbox) Crash(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdownLocked(reason)
}

// Stop destroys the fake VM.
func (s *Sandbox) Stop(ctx context.Context) error {
	s.Crash("stopped")
	return nil
}

func (s *Sandbox) shutdownLocked(reason string) {
	if s.stopped {
		return
	}
	for _, c := range s.containers {
		s.killContainerLocked(c, 9)
	}
	s.stopped = true
	close(s.events)
	s.exit = hypervisor.ExitStatus{Code: 0, Reason: reason, ExitedAt: time.Now()}
	close(s.exited)
}

// Wait blocks until the fake VM is gone.
func (s *Sandbox) Wait(ctx context.Context) (hypervisor.ExitStatus, error) {
	select {
	case <-s.exited:
	case <-ctx.Done():
		return hypervisor.ExitStatus{}, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exit, nil
}

// Info reports the fake VMM pid and state dir.
func (s *Sandbox) Info() hypervisor.Info {
	return hypervisor.Info{PID: s.pid, StateDir: s.Opts.StateDir, Accel: "fake"}
}

// start runs a process's behaviour; s.mu is held.
func (s *Sandbox) startLocked(c *container, p *proc) error {
	if len(p.args) > 0 && p.args[0] == "fail-start" {
		return fmt.Errorf("fake: %s refuses to start", p.id)
	}
	p.status = "running"
	if p == c.init {
		s.emit(&eventstypes.TaskStart{ContainerID: c.id, Pid: 1000})
	} else {
		s.emit(&eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: p.id, Pid: 1001})
	}
	cmd := ""
	if len(p.args) > 0 {
		cmd = p.args[0]
	}
	switch cmd {
	case "echo":
		if p.io.Stdout != nil {
			fmt.Fprintln(p.io.Stdout, strings.Join(p.args[1:], " "))
		}
		s.exitLocked(c, p, 0)
	case "exit":
		code := 0
		if len(p.args) > 1 {
			code, _ = strconv.Atoi(p.args[1])
		}
		s.exitLocked(c, p, uint32(code))
	case "cat":
		go func() {
			if p.io.Stdin != nil && p.io.Stdout != nil {
				_, _ = io.Copy(p.io.Stdout, p.io.Stdin)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			s.exitLocked(c, p, 0)
		}()
	}
	return nil
}

// exitLocked ends a process; an init that exits takes its execs with it,
// and their exits are reported first.
func (s *Sandbox) exitLocked(c *container, p *proc, code uint32) {
	if p.status == "stopped" {
		return
	}
	if p == c.init {
		for _, id := range c.order {
			if e := c.execs[id]; e != nil {
				s.exitLocked(c, e, 128+9)
			}
		}
	}
	p.status, p.code, p.at = "stopped", code, time.Now()
	p.outOnce.Do(func() {
		if p.io.Stdout != nil {
			p.io.Stdout.Close()
		}
		if p.io.Stderr != nil {
			p.io.Stderr.Close()
		}
	})
	close(p.done)
	s.emit(&eventstypes.TaskExit{ContainerID: c.id, ID: p.id, Pid: 1000, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(p.at)})
}

func (s *Sandbox) killContainerLocked(c *container, sig uint32) {
	s.exitLocked(c, c.init, 128+sig)
}

// lookup finds a process; s.mu is held.
func (s *Sandbox) lookup(id, execID string) (*container, *proc, error) {
	if err := s.up(); err != nil {
		return nil, nil, err
	}
	c, ok := s.containers[id]
	if !ok {
		return nil, nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %s: %w", execID, errdefs.ErrNotFound)
	}
	return c, p, nil
}

func statusOf(s string) task.Status {
	switch s {
	case "created":
		return task.Status_CREATED
	case "running":
		return task.Status_RUNNING
	case "paused":
		return task.Status_PAUSED
	default:
		return task.Status_STOPPED
	}
}
