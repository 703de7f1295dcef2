// Package pod holds the one pod (one sandbox.Sandbox, one VM) a shim process
// serves, shared by the task service (containerd's podsandbox mode, where the
// pause container's Create brings the VM up) and the sandbox service
// (`sandboxer = "shim"`). It also owns the single goroutine that forwards the
// guest's events to containerd, in the order the guest produced them.
package pod

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/sandbox"
	"github.com/coco-runtime/coco/sandbox/ratelog"
	"github.com/coco-runtime/coco/shim/events"
	"github.com/coco-runtime/coco/shim/options"
)

// Deps are the parts the binary and the tests choose differently.
type Deps struct {
	// Factory creates the sandbox (sandbox.New in the binary, a fake in tests).
	Factory sandbox.Factory
	// LoadConfig loads a runtime configuration; "" means the embedded default.
	LoadConfig func(path string) (*configs.Config, error)
	// Getenv reads the environment (os.Getenv in the binary).
	Getenv func(string) string
}

// Where pod state lives: /run/coco/<pod id>. Pod ids are containerd
// identifiers (validated before they get here), so they cannot escape the
// directory; naming the directory after the pod lets an operator (and the
// integration leak checks) find what belongs to which pod.
const (
	DefaultRunDir = "/run/coco"
	RunDirEnv     = "COCO_RUN_DIR"
)

// StateDir is the directory of pod id under root.
func StateDir(root, id string) string {
	return filepath.Join(root, id)
}

// RunDir is $COCO_RUN_DIR or DefaultRunDir.
func RunDir(getenv func(string) string) string {
	if d := getenv(RunDirEnv); d != "" {
		return d
	}
	return DefaultRunDir
}

// State of the pod VM.
type State int

const (
	Empty   State = iota // no sandbox yet
	Created              // sandbox made, VM not booted
	Ready                // VM up, guest set up
	Stopped              // VM gone
)

func (s State) String() string {
	return [...]string{"empty", "created", "ready", "stopped"}[s]
}

// Observer sees each guest event, in order, before it is published. It
// checks the event against the shim's own record of the pod's processes and
// returns an error for one that names a process the shim does not know (the
// event is then dropped); it may rewrite the message (e.g. guest pids into
// the host's view). The func it may return runs once the event has been
// published (or given up on): what depends on containerd having the event
// (a TaskExit before Wait returns) waits for it.
type Observer func(ev *sandbox.Event) (published func(), err error)

// Pod is the shim's single pod.
type Pod struct {
	deps Deps
	pub  events.Publisher
	ns   string
	// ctx is the long-lived shim context; events are published with it
	// even after a request that created the pod returns. Stop cancels it
	// (cancelPublish) once the drain grace is over, so that a shim whose
	// containerd is gone does not spend its exit retrying events.
	ctx           context.Context
	cancelPublish context.CancelFunc

	mu         sync.Mutex
	state      State
	id         string
	sb         sandbox.Sandbox
	sandboxAPI bool // created through the sandbox service
	createdAt  time.Time
	observer   Observer
	exit       hypervisor.ExitStatus
	exitOnce   sync.Once
	exited     chan struct{} // closed once the VM is gone
	forwarded  chan struct{} // closed once the last event is published

	// dropLog bounds the warnings about events refused from the guest.
	dropLog *ratelog.Limiter
}

// At most dropLogBurst warnings about refused guest events per
// dropLogInterval; the rest are counted in the next warning.
const (
	dropLogBurst    = 10
	dropLogInterval = time.Minute
)

// New returns an empty pod. ctx carries the containerd namespace.
func New(ctx context.Context, ns string, deps Deps, pub events.Publisher) *Pod {
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &Pod{
		deps:          deps,
		pub:           pub,
		ns:            ns,
		ctx:           pctx,
		cancelPublish: cancel,
		exited:        make(chan struct{}),
		forwarded:     make(chan struct{}),
		dropLog:       ratelog.New(dropLogBurst, dropLogInterval),
	}
}

// drainGrace is how long Stop lets the last events be delivered before it
// gives up on a containerd that does not take them.
const drainGrace = 5 * time.Second

// SetObserver installs the event observer; call it before Create.
func (p *Pod) SetObserver(o Observer) {
	p.mu.Lock()
	p.observer = o
	p.mu.Unlock()
}

// Namespace is the containerd namespace of the pod.
func (p *Pod) Namespace() string { return p.ns }

// ID is the pod (sandbox) id, "" before Create.
func (p *Pod) ID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id
}

// State reports where the pod is in its lifecycle.
func (p *Pod) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// ManagedBySandboxAPI is true when containerd's sandbox API created the pod:
// then only ShutdownSandbox ends the shim, not the last task's Shutdown.
func (p *Pod) ManagedBySandboxAPI() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sandboxAPI
}

// CreatedAt is when Create succeeded.
func (p *Pod) CreatedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.createdAt
}

// StateDir is where this pod's sandbox keeps its state.
func (p *Pod) StateDir(id string) string {
	return StateDir(RunDir(p.getenv), id)
}

func (p *Pod) getenv(k string) string {
	if p.deps.Getenv == nil {
		return ""
	}
	return p.deps.Getenv(k)
}

// LoadConfig resolves and loads the configuration: the runtime options' ConfigPath
// (from the request, else what `start` saved in the bundle), else
// $COCO_CONFIG, else the embedded default.
func (p *Pod) LoadConfig(ctx context.Context, opts *anypb.Any, bundle string) (*configs.Config, error) {
	if opts == nil || len(opts.GetValue()) == 0 {
		saved, err := options.ReadSaved(bundle)
		if err != nil {
			log.G(ctx).WithError(err).Warn("ignoring runtime options saved by start")
		}
		opts = saved
	}
	path, err := options.ConfigPath(opts)
	if err != nil {
		return nil, err
	}
	if path, err = options.ResolveConfigPath(path, p.getenv); err != nil {
		return nil, err
	}
	if p.deps.LoadConfig == nil {
		return nil, fmt.Errorf("no configuration loader: %w", errdefs.ErrNotImplemented)
	}
	cfg, err := p.deps.LoadConfig(path)
	if err != nil {
		if path == "" {
			return nil, fmt.Errorf("default configuration: %w", err)
		}
		return nil, fmt.Errorf("configuration %s: %w", path, err)
	}
	return cfg, nil
}

// Create makes the sandbox (the VM is not booted yet) and starts forwarding
// its events.
func (p *Pod) Create(ctx context.Context, opts sandbox.Options, bySandboxAPI bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != Empty {
		if p.id == opts.ID {
			return fmt.Errorf("pod %s: %w", opts.ID, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("this shim already serves pod %s, cannot create pod %s: %w", p.id, opts.ID, errdefs.ErrFailedPrecondition)
	}
	if p.deps.Factory == nil {
		return fmt.Errorf("no sandbox factory: %w", errdefs.ErrNotImplemented)
	}
	sb, err := p.deps.Factory(ctx, opts)
	if err != nil {
		return fmt.Errorf("create pod %s: %w", opts.ID, err)
	}
	p.sb, p.id, p.state, p.sandboxAPI = sb, opts.ID, Created, bySandboxAPI
	p.createdAt = time.Now()
	go p.forward(sb.Events(), p.observer)
	return nil
}

// Start boots the VM. On failure the VM is destroyed and the pod is Stopped.
func (p *Pod) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.state != Created {
		st := p.state
		p.mu.Unlock()
		return fmt.Errorf("start pod: pod is %s, want created: %w", st, errdefs.ErrFailedPrecondition)
	}
	sb := p.sb
	p.mu.Unlock()

	if err := sb.Start(ctx); err != nil {
		if serr := p.Stop(context.WithoutCancel(ctx)); serr != nil {
			log.G(ctx).WithError(serr).Warn("cleaning up after a failed pod start")
		}
		return fmt.Errorf("start pod %s: %w", p.ID(), err)
	}
	p.mu.Lock()
	if p.state == Created {
		p.state = Ready
	}
	p.mu.Unlock()
	go p.waitVM(sb)
	return nil
}

// waitVM records the VM's end, whoever caused it.
func (p *Pod) waitVM(sb sandbox.Sandbox) {
	st, err := sb.Wait(p.ctx)
	if err != nil {
		st = hypervisor.ExitStatus{Code: 255, Reason: err.Error(), ExitedAt: time.Now()}
	}
	p.setExited(st)
}

func (p *Pod) setExited(st hypervisor.ExitStatus) {
	p.exitOnce.Do(func() {
		if st.ExitedAt.IsZero() {
			st.ExitedAt = time.Now()
		}
		p.mu.Lock()
		p.exit = st
		p.state = Stopped
		p.mu.Unlock()
		close(p.exited)
	})
}

// Sandbox returns the running sandbox, or ErrFailedPrecondition when the VM
// is not (or no longer) up.
func (p *Pod) Sandbox() (sandbox.Sandbox, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.forwarded:
		// The sandbox closed its events: the VM is gone even if its
		// exit has not been recorded yet.
		return nil, fmt.Errorf("pod %s: VM has exited: %w", p.id, errdefs.ErrFailedPrecondition)
	default:
	}
	switch p.state {
	case Ready:
		return p.sb, nil
	case Stopped:
		return nil, fmt.Errorf("pod %s: VM has exited (%s): %w", p.id, p.exit.Reason, errdefs.ErrFailedPrecondition)
	default:
		return nil, fmt.Errorf("pod VM is %s, not running: %w", p.state, errdefs.ErrFailedPrecondition)
	}
}

// Info describes the VM; the zero Info before Create.
func (p *Pod) Info() hypervisor.Info {
	p.mu.Lock()
	sb := p.sb
	p.mu.Unlock()
	if sb == nil {
		return hypervisor.Info{}
	}
	return sb.Info()
}

// VMMPid is the host pid containerd is shown for every task of the pod:
// guest pids mean nothing on the host, and a host tool that acts on a task
// pid must hit this pod's VMM, never an unrelated host process.
func (p *Pod) VMMPid() uint32 {
	return uint32(p.Info().PID)
}

// Stop destroys the VM (idempotent) and waits until its last event has been
// published or ctx is done.
func (p *Pod) Stop(ctx context.Context) error {
	p.mu.Lock()
	sb, st := p.sb, p.state
	p.mu.Unlock()
	if sb == nil {
		return nil
	}
	var err error
	if st != Stopped {
		err = sb.Stop(ctx)
	}
	if st == Created {
		// Never booted: no waitVM goroutine records the end.
		p.setExited(hypervisor.ExitStatus{Reason: "stopped before start"})
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return fmt.Errorf("stop pod %s: waiting for the VM to exit: %w", p.ID(), ctx.Err())
	}
	grace := time.NewTimer(drainGrace)
	defer grace.Stop()
	select {
	case <-p.forwarded:
		return err
	case <-grace.C:
	case <-ctx.Done():
	}
	log.G(ctx).WithField("pod", p.ID()).Warn("containerd is not taking the pod's last events; dropping them")
	p.cancelPublish()
	select {
	case <-p.forwarded:
	case <-ctx.Done():
		return fmt.Errorf("stop pod %s: waiting for the last events to be published: %w", p.ID(), ctx.Err())
	}
	return err
}

// Wait blocks until the VM is gone.
func (p *Pod) Wait(ctx context.Context) (hypervisor.ExitStatus, error) {
	if p.State() == Empty {
		return hypervisor.ExitStatus{}, fmt.Errorf("no pod: %w", errdefs.ErrNotFound)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return hypervisor.ExitStatus{}, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit, nil
}

// Exit is the VM's exit status once Stopped.
func (p *Pod) Exit() (hypervisor.ExitStatus, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit, p.state == Stopped
}

// Forwarded is closed after the sandbox closed its event channel and every
// event in it was published (so every exit is known).
func (p *Pod) Forwarded() <-chan struct{} { return p.forwarded }

// forward is the only publisher of guest events: one goroutine, one event
// at a time, in channel order. The guest is not trusted: an event is
// published only under the topic its type implies, and only once the
// observer (the task table) has found the process it names. Without an
// observer nothing can be checked, so nothing is published.
func (p *Pod) forward(ch <-chan sandbox.Event, observe Observer) {
	defer close(p.forwarded)
	ctx := log.WithLogger(p.ctx, log.G(p.ctx).WithField("pod", p.ID()))
	for ev := range ch {
		if ev.Message == nil {
			continue
		}
		entry := log.G(ctx).WithFields(log.Fields{"type": fmt.Sprintf("%T", ev.Message), "guest_topic": ratelog.Clip(ev.Topic)})
		topic, ok := guestTopic(ev.Message)
		if !ok {
			p.dropLog.Warn(entry, "dropping a guest event of a type the guest may not send")
			continue
		}
		if ev.Topic != "" && ev.Topic != topic {
			p.dropLog.Warn(entry.WithField("topic", topic), "guest event came with a topic that does not match its type; publishing it under its type's topic")
		}
		if observe == nil {
			p.dropLog.Warn(entry, "dropping a guest event: no task table to check it against")
			continue
		}
		published, err := observe(&ev)
		if err != nil {
			p.dropLog.Warn(entry.WithField("error", ratelog.Clip(err.Error())), "dropping a guest event that names no process of this pod")
			continue
		}
		if err := p.pub.Publish(ctx, topic, ev.Message); err != nil {
			log.G(ctx).WithError(err).WithField("topic", topic).Error("event lost")
		}
		if published != nil {
			published()
		}
	}
}
