package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/sandbox/network"
	"github.com/coco-runtime/coco/sandbox/ratelog"
	"github.com/coco-runtime/coco/sandbox/vmplan"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// agentClient is what the sandbox needs of the guest agent connection.
type agentClient interface {
	streamOpener
	Task() taskAPI.TTRPCTaskService
	Agent() api.AgentClient
	// Health is the agent's answer to the handshake (version, boot clock).
	Health() *api.HealthResponse
	// GuestClockZero maps the guest clock onto the host's (zero if unknown).
	GuestClockZero() time.Time
	// HandshakeTimes are when the client had its connection and sent the
	// Health that Health answers (host clock).
	HandshakeTimes() (began, sent time.Time)
	Close() error
}

// orphanExitStatus is reported for processes that were running when the VM
// died: the guest can no longer say how they ended.
const orphanExitStatus = 255

type vmSandbox struct {
	probing  atomic.Bool // a Health probe is under way (probe)
	stopping atomic.Bool // Stop or teardown began: the agent's connection is expected to end
	opts     Options
	vmConfig hypervisor.Config
	vm       hypervisor.VM
	dial     func(ctx context.Context, vm hypervisor.VM) (agentClient, error)
	plumber  network.Plumber // nil: no pod network

	mu      sync.Mutex
	started bool
	agent   agentClient
	disks   map[string]string // container id → rootfs image on the host
	// forwarder serves port-forward in the pod's namespace (nil: none).
	forwarder *network.LoopbackForwarder
	// vols keeps containers' file volumes in sync and copies their
	// termination messages back (volumesync.go).
	vols volumeSync
	// dvols are the containers' image volume disks (diskvolumes.go).
	dvols diskVolumes
	// emptyDirDisks back the pod's disk-backed emptyDirs (emptydirdisk.go).
	emptyDirDisks emptyDirDisks

	events       chan Event
	eventsClosed sync.Once
	live         liveProcs
	phases       phaseLog
	observe      startObserver // told Start's steps (phases.json)
	bgCancel     context.CancelFunc
	stopOnce     sync.Once
	stopErr      error
}

// New is the Factory of real sandboxes: it resolves the configuration and
// validates the pod's input (init-data, annotations) but starts nothing.
func New(ctx context.Context, opts Options) (Sandbox, error) {
	if opts.Config == nil {
		return nil, fmt.Errorf("sandbox %s: no configuration: %w", opts.ID, errdefs.ErrInvalidArgument)
	}
	if opts.StateDir == "" {
		return nil, fmt.Errorf("sandbox %s: no state directory: %w", opts.ID, errdefs.ErrInvalidArgument)
	}
	if err := checkHostNetwork(opts); err != nil {
		return nil, err
	}
	plan, err := vmplan.New(opts.Config, vmplan.Pod{ID: opts.ID, Dir: opts.StateDir, Annotations: opts.Annotations})
	if err != nil {
		return nil, err
	}
	made, err := plan.Create()
	if err != nil {
		return nil, err
	}
	if plan.InitData != nil && plan.InitData.Note != "" {
		log.G(ctx).WithField("sandbox", opts.ID).Warn(plan.InitData.Note)
	}
	vm, err := plan.Launch()
	if err != nil {
		if made {
			os.RemoveAll(opts.StateDir)
		}
		return nil, err
	}
	sb := &vmSandbox{
		opts:     opts,
		vmConfig: plan.VM,
		vm:       vm,
		dial:     dialAgent,
		plumber:  network.Netlink{},
		disks:    map[string]string{},
		events:   make(chan Event, 128),
		phases:   phaseLog{dir: opts.StateDir},
	}
	sb.observe = newPhaseObserver(&sb.phases)
	return sb, nil
}

func (s *vmSandbox) Start(ctx context.Context) (retErr error) {
	// The lock guards the fields only, never the boot: Stop may run while
	// Start waits for the guest.
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return fmt.Errorf("sandbox %s already started: %w", s.opts.ID, errdefs.ErrFailedPrecondition)
	}
	s.started = true
	s.mu.Unlock()
	log.G(ctx).WithField("sandbox", s.opts.ID).Debug("starting pod VM")
	obs := s.observe
	obs.step(stepState)
	if err := os.MkdirAll(s.opts.StateDir, 0o700); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			s.teardown(sctx)
		}
	}()
	if err := writeState(s.opts.StateDir, state{ID: s.opts.ID, VMStateDir: s.vmConfig.StateDir, NetNS: s.opts.NetNSPath}); err != nil {
		return err
	}

	obs.step(stepNetwork)
	podNet, err := s.plumbNetwork(ctx)
	if err != nil {
		return err
	}
	defer podNet.Close() // the VMM holds its own copies of the taps

	obs.step(stepVM)
	if err := s.vm.Start(ctx); err != nil {
		return err
	}
	obs.launched(s.vm.Info().Launch)

	obs.step(stepAgent)
	if err := writeState(s.opts.StateDir, state{ID: s.opts.ID, VMStateDir: s.vmConfig.StateDir, VMPID: s.vm.Info().PID, NetNS: s.opts.NetNSPath}); err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, s.vmConfig.BootTimeout)
	defer cancel()
	client, err := s.dial(dctx, s.vm)
	if err != nil {
		return fmt.Errorf("sandbox %s: guest agent did not answer: %w", s.opts.ID, err)
	}
	s.mu.Lock()
	s.agent = client
	s.mu.Unlock()
	obs.agentUp(client)

	obs.step(stepSetup)
	bg, bgCancel := context.WithCancel(context.WithoutCancel(ctx))
	stream, err := client.Agent().Events(bg, &api.EventsRequest{})
	if err != nil {
		bgCancel()
		return fmt.Errorf("sandbox %s: subscribe to guest events: %w", s.opts.ID, err)
	}
	go s.pumpEvents(bg, stream)
	// From here the pump owns the events channel; teardown stops it.
	s.mu.Lock()
	s.bgCancel = bgCancel
	s.mu.Unlock()
	setup, err := s.setupRequest()
	if err != nil {
		return err
	}
	setup.Network = podNet.Proto()
	if _, err := client.Agent().SetupSandbox(ctx, setup); err != nil {
		// The console says what the guest made of itself (a TEE guest
		// says why it is one): the user sees it with the refusal.
		return fmt.Errorf("sandbox %s: guest setup: %w%s", s.opts.ID, err, consoleTail(s.vm.Info().ConsoleLog, 10))
	}

	obs.step(stepServe)
	s.forwardLoopback(ctx)
	obs.done()
	return nil
}

func (s *vmSandbox) setupRequest() (*api.SetupSandboxRequest, error) {
	// Without a sandbox container task (containerd's sandbox API) the VM's
	// own namespaces are the pod's: no pause process to start first.
	r := &api.SetupSandboxRequest{SandboxId: s.opts.ID, HostTime: timestamppb.Now(), VmNamespaces: s.opts.SandboxAPI}
	if sp := s.opts.Spec; sp != nil {
		r.Hostname = sp.Hostname
		if sp.Linux != nil {
			r.Sysctls = sp.Linux.Sysctl
		}
	}
	policy, err := podPolicy(s.opts)
	if err != nil {
		return nil, err
	}
	r.Policy = policy
	return r, nil
}

// pumpEvents forwards guest events in order. When the stream ends (the VM
// is gone or stopping) every process still running gets its TaskExit.
// Events are the guest's word: ids are checked here, the rest against the
// task table in the shim, and warnings about refused events are rate-limited.
func (s *vmSandbox) pumpEvents(ctx context.Context, stream api.Agent_EventsClient) {
	defer s.closeEvents()
	drops := ratelog.New(10, time.Minute)
	for {
		ev, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil && !s.stopping.Load() {
				s.reportLostAgent(ctx, err)
			}
			break
		}
		entry := log.G(ctx).WithField("topic", ratelog.Clip(ev.GetTopic()))
		msg, err := typeurl.UnmarshalAny(ev.GetEvent())
		if err != nil {
			drops.Warn(entry.WithField("error", ratelog.Clip(err.Error())), "dropping undecodable guest event")
			continue
		}
		if err := checkEventIDs(msg); err != nil {
			drops.Warn(entry.WithField("error", err.Error()), "dropping a guest event with a malformed id")
			continue
		}
		if s.opts.SandboxAPI && containerOf(msg) == s.opts.ID {
			continue // the guest's own pause container: containerd has no such task
		}
		if id, ok := isInitExit(msg); ok {
			s.vols.exited(ctx, id, s.readTerminationMessage)
		}
		if !s.live.observe(msg) {
			drops.Warn(entry, fmt.Sprintf("the guest reports more than %d live processes; not tracking more", maxLiveProcs))
		}
		s.events <- Event{Topic: ev.GetTopic(), Message: msg}
	}
	orphans := s.live.orphanExits(orphanExitStatus)
	if len(orphans) > 0 {
		log.G(ctx).WithField("sandbox", s.opts.ID).Warnf("pod VM gone with %d processes running; reporting them exited", len(orphans))
	}
	for _, e := range orphans {
		s.events <- e
	}
}

// reportLostAgent says why the guest agent's connection ended while the
// pod was not being stopped: how the VMM exited, or, if it still runs, what
// the guest last printed (a panic, the OOM killer, the agent's last words).
func (s *vmSandbox) reportLostAgent(ctx context.Context, err error) {
	entry := log.G(ctx).WithField("sandbox", s.opts.ID).WithError(err)
	if s.vm == nil {
		entry.Warn("lost the guest agent")
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if st, werr := s.vm.Wait(wctx); werr == nil {
		entry.Warnf("lost the guest agent: the VM exited (code %d: %s)%s", st.Code, st.Reason, consoleTail(s.vm.Info().ConsoleLog, 15))
		return
	}
	info := s.vm.Info()
	entry.Warnf("lost the guest agent while its VM still runs%s%s", consoleTail(info.ConsoleLog, 15), helperTail(info.HelperLog))
}

func (s *vmSandbox) client() (agentClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.agent == nil {
		return nil, fmt.Errorf("sandbox %s is not running: %w", s.opts.ID, errdefs.ErrFailedPrecondition)
	}
	return s.agent, nil
}

func (s *vmSandbox) CreateTask(ctx context.Context, r *taskAPI.CreateTaskRequest, ctr Container, pio IO) (_ *taskAPI.CreateTaskResponse, retErr error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	spec := ctr.Parsed
	if spec == nil {
		return nil, fmt.Errorf("container %s: bundle %s has no config.json: %w", r.ID, r.Bundle, errdefs.ErrInvalidArgument)
	}
	if err := checkHostDirs(spec, hostDirsMode(s.opts.Config.Volumes.HostDirs, s.vmConfig.TEE.Kind.Confidential())); err != nil {
		return nil, err
	}
	prep := &api.PrepareContainerRequest{ContainerId: r.ID, Spec: ctr.Spec}
	cp := ContainerPhases{ID: r.ID}
	t := time.Now()
	// The streams are dialled while the rootfs and the guest bundle are
	// made. A process with stdin alone waits for PrepareContainer as
	// before: the host closing it reads as EOF to the guest, which would
	// keep that stream until a Delete that a failed create never sends.
	var st *pendingStdio
	defer func() {
		if retErr != nil && st != nil {
			st.cancel()
		}
	}()
	if pio.hasOutput() {
		st = dialStdio(ctx, c, r.ID, "", pio)
	}
	if ctr.Pause {
		prep.SandboxContainer = true
		prep.Rootfs = &api.Rootfs{Source: &api.Rootfs_Agent{Agent: &emptypb.Empty{}}}
	} else if s.opts.Config.Rootfs.GuestPull {
		if ctr.Image == "" {
			return nil, fmt.Errorf("container %s: rootfs.guest_pull is on, but no image is named for it: run containers of this runtime class through the CRI: %w",
				r.ID, errdefs.ErrInvalidArgument)
		}
		prep.Rootfs = &api.Rootfs{Source: &api.Rootfs_GuestPull{GuestPull: &api.GuestPull{Image: ctr.Image}}}
	} else {
		root := ""
		if spec.Root != nil {
			root = spec.Root.Path
		}
		serial, err := s.attachRootfs(ctx, r, root)
		if err != nil {
			return nil, err
		}
		defer func() {
			if retErr != nil {
				s.detachRootfs(context.WithoutCancel(ctx), r.ID)
			}
		}()
		prep.Rootfs = &api.Rootfs{Source: &api.Rootfs_Block{Block: &api.BlockDevice{Serial: serial, Fstype: "erofs"}}}
	}
	if prep.DiskVolumes, err = s.attachDiskVolumes(ctx, r.ID, spec); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			s.detachDiskVolumes(context.WithoutCancel(ctx), r.ID)
		}
	}()
	if prep.BlockVolumes, err = s.attachBlockVolumes(ctx, r.ID, spec); err != nil {
		return nil, err
	}
	cp.RootfsMs = ms(time.Since(t))
	copyDirs := hostDirsMode(s.opts.Config.Volumes.HostDirs, s.vmConfig.TEE.Kind.Confidential()) == "copy"
	if prep.Files, err = hostFiles(spec, copyDirs); err != nil {
		return nil, err
	}
	if copyDirs {
		if prep.Spec, err = readOnlyHostDirs(prep.Spec, spec); err != nil {
			return nil, err
		}
	}
	if prep.Spec, err = emptyDirSubPaths(prep.Spec, spec); err != nil {
		return nil, err
	}
	if err := s.attachEmptyDirDisks(ctx, spec); err != nil {
		return nil, err
	}
	if err := s.addResolvConf(prep, spec); err != nil {
		return nil, err
	}
	t = time.Now()
	prepared, err := c.Agent().PrepareContainer(ctx, prep)
	if err != nil {
		if ctx.Err() != nil {
			s.undoInGuest(ctx, c, r.ID)
		}
		return nil, s.explainMissingDisk(prep, err)
	}
	defer func() {
		// Runs before the rootfs disk is detached (defers run last first).
		if retErr != nil {
			s.undoInGuest(ctx, c, r.ID)
		}
	}()
	cp.PrepareMs = ms(time.Since(t))
	t = time.Now()
	if st == nil {
		st = dialStdio(ctx, c, r.ID, "", pio)
	}
	stdin, stdout, stderr, err := st.wait()
	if err != nil {
		return nil, err
	}
	cp.StdioMs = ms(st.took)
	resp, err := c.Task().Create(ctx, &taskAPI.CreateTaskRequest{
		ID:       r.ID,
		Bundle:   prepared.GetBundle(),
		Terminal: r.Terminal,
		Stdin:    stdin,
		Stdout:   stdout,
		Stderr:   stderr,
	})
	if err != nil {
		return nil, err
	}
	cp.CreateMs = ms(time.Since(t))
	s.vols.watch(ctx, r.ID, spec, s.updateVolume)
	cp.DoneAtNs = time.Now().UnixNano()
	s.phases.update(func(p *Phases) { p.Containers = append(p.Containers, cp) })
	return resp, nil
}

// undoInGuest removes what a CreateTask the host gave up on made in the
// guest: the guest keeps working past the host's deadline, so it may have
// prepared the bundle or even created the task. Its process is killed and
// the task and bundle deleted, so the guest unmounts the rootfs before its
// disk is unplugged and no container runs that the host does not know of.
func (s *vmSandbox) undoInGuest(ctx context.Context, c agentClient, id string) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	t := c.Task()
	// NotFound when the task was never created; Delete still removes the
	// prepared bundle then.
	t.Kill(uctx, &taskAPI.KillRequest{ID: id, Signal: uint32(unix.SIGKILL), All: true})
	for {
		_, err := t.Delete(uctx, &taskAPI.DeleteRequest{ID: id})
		if err == nil || errdefs.IsNotFound(err) {
			return
		}
		if uctx.Err() != nil {
			log.G(ctx).WithError(err).WithField("container", id).Warn("undoing a failed container create in the guest")
			return
		}
		// The killed process is not reaped yet: the guest refuses to
		// delete a task whose process runs.
		select {
		case <-uctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// undoTimeout bounds undoInGuest: a kill, its exit and a delete take the
// agent well under a second; the host's own caller has already given up.
const undoTimeout = 5 * time.Second

func (s *vmSandbox) attachRootfs(ctx context.Context, r *taskAPI.CreateTaskRequest, root string) (string, error) {
	hot, ok := s.vm.(hypervisor.DiskHotplugger)
	if !ok {
		return "", fmt.Errorf("hypervisor %q cannot attach disks to a running VM: %w", s.vmConfig.Driver, errdefs.ErrNotImplemented)
	}
	dir := filepath.Join(s.opts.StateDir, "rootfs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	image := filepath.Join(dir, r.ID+".erofs")
	if err := buildRootfsImage(ctx, mkfsPath(s.opts.Config), r.Bundle, root, r.Rootfs, image); err != nil {
		return "", fmt.Errorf("container %s: %w", r.ID, err)
	}
	serial := diskSerial(r.ID)
	if err := hot.AddDisk(ctx, hypervisor.Disk{ID: serial, Path: image, ReadOnly: true}); err != nil {
		os.Remove(image)
		return "", fmt.Errorf("container %s: attach rootfs image: %w", r.ID, err)
	}
	s.mu.Lock()
	s.disks[r.ID] = image
	s.mu.Unlock()
	return serial, nil
}

// explainMissingDisk adds the guest kernel's hot-plug errors to the agent's
// answer (a native error: the client converts codes) that a hot-plugged
// rootfs disk never appeared.
func (s *vmSandbox) explainMissingDisk(prep *api.PrepareContainerRequest, err error) error {
	if prep.GetRootfs().GetBlock() == nil {
		return err
	}
	if !errdefs.IsNotFound(err) {
		return err
	}
	if why := hotplugErrors(s.vm.Info().ConsoleLog); why != "" {
		return fmt.Errorf("%w (the guest kernel logged: %s)", err, why)
	}
	return err
}

// rootfsDetachTimeout bounds a hot-unplug: the guest must release the
// device (it does within a second, or QEMU exits and the device is gone
// with it). A guest that never saw the disk (no hot-plug driver, a wedged
// kernel) never releases it, and without a bound the failed CreateTask
// that detaches it would never return.
const rootfsDetachTimeout = 30 * time.Second

// releaseRootfs detaches a deleted container's rootfs disk in the
// background. Another disk's hot-plug waits for it in the hypervisor.
func (s *vmSandbox) releaseRootfs(ctx context.Context, containerID string) {
	go s.detachRootfs(context.WithoutCancel(ctx), containerID)
}

// detachRootfs removes a container's rootfs disk, waiting at most
// rootfsDetachTimeout for the guest to let go of it.
func (s *vmSandbox) detachRootfs(ctx context.Context, containerID string) {
	ctx, cancel := context.WithTimeout(ctx, rootfsDetachTimeout)
	defer cancel()
	s.mu.Lock()
	image, ok := s.disks[containerID]
	delete(s.disks, containerID)
	s.mu.Unlock()
	if !ok {
		return
	}
	if hot, ok := s.vm.(hypervisor.DiskHotplugger); ok {
		if err := hot.RemoveDisk(ctx, diskSerial(containerID)); err != nil {
			log.G(ctx).WithError(err).WithField("container", containerID).Warn("detach rootfs image")
		}
	}
	os.Remove(image)
}

func (s *vmSandbox) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest, pio IO) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	stdin, stdout, stderr, abort, err := connectStdio(ctx, c, r.ID, r.ExecID, pio)
	if err != nil {
		return err
	}
	_, err = c.Task().Exec(ctx, &taskAPI.ExecProcessRequest{
		ID: r.ID, ExecID: r.ExecID, Terminal: r.Terminal, Spec: r.Spec,
		Stdin: stdin, Stdout: stdout, Stderr: stderr,
	})
	if err != nil {
		abort()
	}
	return err
}

func (s *vmSandbox) Task() taskAPI.TTRPCTaskService {
	return &guestTasks{s: s}
}

func (s *vmSandbox) Events() <-chan Event { return s.events }

func (s *vmSandbox) Stop(ctx context.Context) error {
	s.stopping.Store(true)
	s.stopOnce.Do(func() {
		s.mu.Lock()
		c := s.agent
		s.mu.Unlock()
		if c != nil {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := c.Agent().DestroySandbox(dctx, &api.DestroySandboxRequest{})
			if err != nil {
				log.G(ctx).WithError(err).Debug("guest DestroySandbox")
			} else if q, ok := s.vm.(hypervisor.Quitter); ok {
				// The guest holds nothing worth its own shutdown (under
				// TCG ~0.2 s of kernel power-off): end the VM now.
				if err := q.Quit(dctx); err != nil {
					log.G(ctx).WithError(err).Debug("quit the VM after DestroySandbox")
				}
			}
			cancel()
		}
		s.stopErr = s.teardown(ctx)
	})
	return s.stopErr
}

// stopHungVM ends a VM whose guest stopped answering: QEMU is asked to quit
// and killed if it does not within a few seconds (a frozen guest ignores the
// power button; a stopped QEMU ignores QMP). The pod sees the VM exit as it
// sees a VMM that died.
func (s *vmSandbox) stopHungVM(ctx context.Context, why string) {
	s.stopping.Store(true) // the agent's loss is explained here
	info := s.vm.Info()
	log.G(ctx).WithField("sandbox", s.opts.ID).Warnf("stopping the VM: %s%s%s", why, consoleTail(info.ConsoleLog, 15), helperTail(info.HelperLog))
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.vm.Stop(sctx); err != nil {
		log.G(ctx).WithError(err).Warn("stopping a hung VM")
	}
}

// GuestProbeTimeout is how long a guest has to answer Health after a call
// ran out of time, before its VM is taken for hung and stopped.
const GuestProbeTimeout = 10 * time.Second

// probe asks the agent for Health (one probe at a time); a guest that does
// not answer within GuestProbeTimeout is hung, and its VM is stopped.
func (s *vmSandbox) probe(ctx context.Context) {
	if !s.probing.CompareAndSwap(false, true) {
		return
	}
	defer s.probing.Store(false)
	c, err := s.client()
	if err != nil {
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), GuestProbeTimeout)
	defer cancel()
	began := time.Now()
	_, err = c.Agent().Health(pctx, &api.HealthRequest{})
	if err != nil && pctx.Err() != nil {
		s.stopHungVM(ctx, fmt.Sprintf("the guest agent did not answer Health within %s", GuestProbeTimeout))
		return
	}
	log.G(ctx).WithField("sandbox", s.opts.ID).WithError(err).Debugf("guest probe after a call ran out of time: answered in %s", time.Since(began).Round(time.Millisecond))
}

// teardown stops the VM and removes everything the sandbox made on the host.
func (s *vmSandbox) teardown(ctx context.Context) error {
	s.stopping.Store(true)
	var errs []error
	s.stopForwarding()
	s.vols.stopAll()
	if err := s.vm.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.unplumbNetwork(ctx); err != nil {
		errs = append(errs, err)
	}
	s.mu.Lock()
	c := s.agent
	s.agent = nil
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
	s.mu.Lock()
	bgCancel := s.bgCancel
	s.mu.Unlock()
	if bgCancel != nil {
		bgCancel()
	} else {
		// The event pump never started: close the channel ourselves.
		s.closeEvents()
	}
	if err := os.RemoveAll(s.opts.StateDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *vmSandbox) closeEvents() {
	s.eventsClosed.Do(func() { close(s.events) })
}

func (s *vmSandbox) Wait(ctx context.Context) (hypervisor.ExitStatus, error) {
	return s.vm.Wait(ctx)
}

func (s *vmSandbox) Info() hypervisor.Info { return s.vm.Info() }

// Command is what Start launches (hypervisor.Commander): the argv or
// request body of the VM this sandbox holds, which `vm-command` prints and
// `measure --config` hashes.
func (s *vmSandbox) Command() ([]string, []string, error) {
	c, ok := s.vm.(hypervisor.Commander)
	if !ok {
		return nil, nil, fmt.Errorf("hypervisor %q cannot show its command: %w", s.vmConfig.Driver, errdefs.ErrNotImplemented)
	}
	return c.Command()
}

// containerOf names the container a task event is about.
func containerOf(msg any) string {
	if e, ok := msg.(interface{ GetContainerID() string }); ok {
		return e.GetContainerID()
	}
	return ""
}
