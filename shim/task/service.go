// Package task is the shim's containerd task API (containerd.task.v3.Task).
//
// It is a thin layer: host-side checks (the table), host-side stdio, then a
// forward to the guest's own task service, which is containerd's runc task
// service running inside the VM. Exits come from the guest's event stream;
// the guest orders them (a container's execs before its init) and this
// package never reorders them.
package task

import (
	"context"
	"fmt"
	"os"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/containerd/v2/pkg/sys"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/sandbox"
	"github.com/coco-runtime/coco/shim/hostio"
	"github.com/coco-runtime/coco/shim/options"
	"github.com/coco-runtime/coco/shim/pod"
	"github.com/coco-runtime/coco/shim/version"
)

// How long Delete waits for a process's output to reach the host side
// before it releases the stdio anyway.
const drainTimeout = 5 * time.Second

// vmGoneGrace is how long a failed guest Delete waits to learn whether the
// VM died under it.
const vmGoneGrace = 2 * time.Second

// exitVMGone is the exit status of a process whose VM disappeared without
// the guest reporting its exit (as if SIGKILLed).
const exitVMGone = 128 + uint32(unix.SIGKILL)

var _ taskAPI.TTRPCTaskService = (*Service)(nil)

// Service implements the task API for one pod.
type Service struct {
	pod   *pod.Pod
	table *table
	sd    shutdown.Service
}

// New returns the task service of p. sd ends the shim process.
func New(p *pod.Pod, sd shutdown.Service) *Service {
	s := &Service{pod: p, table: newTable(), sd: sd}
	p.SetObserver(s.observe)
	return s
}

// RegisterTTRPC registers the service on the shim's server.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// guest is the guest's task service, or FailedPrecondition when the VM is
// not running.
func (s *Service) guest() (taskAPI.TTRPCTaskService, error) {
	sb, err := s.pod.Sandbox()
	if err != nil {
		return nil, err
	}
	return sb.Task(), nil
}

// Create creates a task. In podsandbox mode the pod's sandbox container
// comes first and its Create brings the VM up.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("restore of container %s from a checkpoint: %s: %w", r.ID, noCheckpoint, errdefs.ErrNotImplemented)
	}
	raw, spec, err := options.ReadSpecFile(r.Bundle)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", r.Bundle, err)
	}
	var annotations map[string]string
	if spec != nil {
		annotations = spec.Annotations
	}
	role, err := options.Classify(r.ID, annotations)
	if err != nil {
		return nil, err
	}
	bootsPod := role.IsSandbox && !s.pod.ManagedBySandboxAPI()
	if !bootsPod && s.pod.ManagedBySandboxAPI() && !hasPodAnnotation(annotations) {
		// A plain client creating tasks in a sandbox-API pod.
		role.SandboxID = s.pod.ID()
	}
	if !bootsPod && role.SandboxID != s.pod.ID() {
		return nil, fmt.Errorf("container %s belongs to pod %q, but this shim serves pod %q: %w",
			r.ID, role.SandboxID, s.pod.ID(), errdefs.ErrFailedPrecondition)
	}

	c := &container{id: r.ID, bundle: r.Bundle, rootfs: r.Rootfs, isSandbox: bootsPod}
	if err := s.table.reserve(c); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			for _, pio := range s.table.remove(r.ID, "") {
				abandonIO(pio)
			}
		}
	}()

	if bootsPod {
		if err := s.bootPod(ctx, r, role.SandboxID, spec); err != nil {
			return nil, err
		}
		defer func() {
			if retErr != nil {
				if err := s.pod.Stop(context.WithoutCancel(ctx)); err != nil {
					log.G(ctx).WithError(err).Warn("destroying the pod after its sandbox container failed")
				}
			}
		}()
	}
	sb, err := s.pod.Sandbox()
	if err != nil {
		return nil, err
	}

	st := stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	pio, err := s.openIO(ctx, r.ID, "", st)
	if err != nil {
		return nil, err
	}
	// The guest runs its own pause container in place of the CRI's.
	ctr := sandbox.Container{Spec: raw, Parsed: spec, Pause: role.IsSandbox && hasPodAnnotation(annotations),
		Image: annotations[options.ImageNameAnnotation]}
	resp, err := sb.CreateTask(ctx, r, ctr, pio.IO())
	if err != nil {
		return nil, err
	}
	log.G(ctx).WithFields(log.Fields{"id": r.ID, "guest_pid": resp.GetPid()}).Debug("task created")
	return &taskAPI.CreateTaskResponse{Pid: s.pod.VMMPid()}, nil
}

// bootPod creates and boots the pod VM for its sandbox container.
func (s *Service) bootPod(ctx context.Context, r *taskAPI.CreateTaskRequest, id string, spec *specs.Spec) error {
	cfg, err := s.pod.LoadConfig(ctx, r.Options, r.Bundle)
	if err != nil {
		return err
	}
	opts := sandbox.Options{
		ID:        id,
		Namespace: s.pod.Namespace(),
		Bundle:    r.Bundle,
		Config:    cfg,
		Spec:      spec,
		NetNSPath: options.NetNSPath(spec),
		StateDir:  s.pod.StateDir(id),
	}
	if spec != nil {
		opts.Annotations = spec.Annotations
	}
	if err := s.pod.Create(ctx, opts, false); err != nil {
		return err
	}
	if err := s.pod.Start(ctx); err != nil {
		return err
	}
	s.adjustOOMScore(ctx, spec)
	return nil
}

// adjustOOMScore gives the VMM the OOM score containerd asked for the pod's
// sandbox, as far as the host allows: lowering it needs CAP_SYS_RESOURCE,
// which many hosts (and these test machines) do not grant the shim. The
// container's own score is applied by the guest either way.
func (s *Service) adjustOOMScore(ctx context.Context, spec *specs.Spec) {
	if spec == nil || spec.Process == nil || spec.Process.OOMScoreAdj == nil {
		return
	}
	pid := int(s.pod.VMMPid())
	if pid == 0 {
		return
	}
	if err := sys.AdjustOOMScore(pid, *spec.Process.OOMScoreAdj); err != nil {
		log.G(ctx).WithError(err).WithField("oom_score_adj", *spec.Process.OOMScoreAdj).
			Warn("cannot set the VMM's OOM score; continuing without it")
	}
}

// openIO opens host stdio and records it in the table.
func (s *Service) openIO(ctx context.Context, id, execID string, st stdio.Stdio) (*hostio.Process, error) {
	pio, err := hostio.Open(ctx, id, st)
	if err != nil {
		return nil, err
	}
	s.table.mu.Lock()
	if _, p, err := s.table.getLocked(id, execID); err == nil {
		p.io, p.stdin, p.stdout, p.stderr, p.terminal = pio, st.Stdin, st.Stdout, st.Stderr, st.Terminal
	}
	s.table.mu.Unlock()
	return pio, nil
}

// Start starts a created task or exec.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (_ *taskAPI.StartResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.table.beginStart(r.ID, r.ExecID); err != nil {
		return nil, err
	}
	g, err := s.guest()
	if err != nil {
		s.table.endStart(r.ID, r.ExecID, false)
		return nil, err
	}
	resp, err := g.Start(ctx, r)
	s.table.endStart(r.ID, r.ExecID, err == nil)
	if err != nil {
		return nil, err
	}
	log.G(ctx).WithFields(log.Fields{"id": r.ID, "exec": r.ExecID, "guest_pid": resp.GetPid()}).Debug("started")
	return &taskAPI.StartResponse{Pid: s.pod.VMMPid()}, nil
}

// Delete deletes a stopped or never-started process and releases its host stdio.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (_ *taskAPI.DeleteResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	s.reconcile()
	if err := s.table.checkStatus(r.ID, r.ExecID, "delete", created, stopped); err != nil {
		return nil, err
	}
	// An exit is deleted only once containerd has its TaskExit.
	if _, p, err := s.table.snapshot(r.ID, r.ExecID); err == nil && p.status == stopped {
		select {
		case <-p.exited:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	resp := &taskAPI.DeleteResponse{}
	if g, err := s.guest(); err == nil {
		gr, err := g.Delete(ctx, r)
		switch {
		case err == nil:
			resp.ExitStatus, resp.ExitedAt = gr.GetExitStatus(), gr.GetExitedAt()
		case errdefs.IsNotFound(errgrpc.ToNative(err)) || s.awaitVMGone(ctx, vmGoneGrace):
			// The guest has no record (its Create failed half-way) or
			// no longer exists: the host record is all there is to delete.
			log.G(ctx).WithError(err).Debug("deleting the host record only")
			s.reconcile()
		default:
			return nil, err
		}
	}
	_, p, err := s.table.snapshot(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if resp.ExitedAt == nil {
		resp.ExitStatus = p.exitStatus
		if !p.exitedAt.IsZero() {
			resp.ExitedAt = protobuf.ToTimestamp(p.exitedAt)
		}
	}
	for _, pio := range s.table.remove(r.ID, r.ExecID) {
		closeIO(ctx, pio)
	}
	resp.Pid = s.pod.VMMPid()
	return resp, nil
}

// closeIO lets the last output reach the host side, then releases it.
func closeIO(ctx context.Context, pio *hostio.Process) {
	if pio == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
	defer cancel()
	if err := pio.Drain(dctx); err != nil {
		log.G(ctx).WithError(err).Warn("process output may be truncated")
	}
	pio.Close()
}

// abandonIO releases the host stdio of a process whose create failed: it
// never ran, so there is no output to wait for (draining would only hold
// the CRI error back for drainTimeout).
func abandonIO(pio *hostio.Process) {
	if pio != nil {
		pio.Close()
	}
}

// Exec adds an exec process to a container.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if _, err := s.table.addExec(r.ID, r.ExecID); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			for _, pio := range s.table.remove(r.ID, r.ExecID) {
				abandonIO(pio)
			}
		}
	}()
	sb, err := s.pod.Sandbox()
	if err != nil {
		return nil, err
	}
	st := stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	pio, err := s.openIO(ctx, r.ID, r.ExecID, st)
	if err != nil {
		return nil, err
	}
	if err := sb.Exec(ctx, r, pio.IO()); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// State reports a process's state: the guest's answer in host terms, or
// the host's record once the VM is gone.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (_ *taskAPI.StateResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	s.reconcile()
	c, p, err := s.table.snapshot(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	resp := &taskAPI.StateResponse{Status: p.status.api(), ExitStatus: p.exitStatus}
	if !p.exitedAt.IsZero() {
		resp.ExitedAt = protobuf.ToTimestamp(p.exitedAt)
	}
	if g, gerr := s.guest(); gerr == nil && p.status != stopped {
		gr, err := g.State(ctx, r)
		if err != nil {
			return nil, err
		}
		resp.Status, resp.ExitStatus, resp.ExitedAt = gr.GetStatus(), gr.GetExitStatus(), gr.GetExitedAt()
	}
	resp.ID = r.ID
	if r.ExecID != "" {
		resp.ID = r.ExecID
	}
	resp.ExecID = r.ExecID
	resp.Bundle = c.bundle
	resp.Pid = s.pod.VMMPid()
	resp.Stdin, resp.Stdout, resp.Stderr, resp.Terminal = p.stdin, p.stdout, p.stderr, p.terminal
	return resp, nil
}

// Pids lists the container's processes (guest pids).
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return forward(s, r.ID, "", func(g taskAPI.TTRPCTaskService) (*taskAPI.PidsResponse, error) { return g.Pids(ctx, r) })
}

// Pause freezes a running container.
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.table.checkStatus(r.ID, "", "pause", running); err != nil {
		return nil, err
	}
	g, err := s.guest()
	if err != nil {
		return nil, err
	}
	if _, err := g.Pause(ctx, r); err != nil {
		return nil, err
	}
	s.table.setStatus(r.ID, "", func(st status) (status, bool) { return paused, st == running })
	return &emptypb.Empty{}, nil
}

// Resume thaws a paused container.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.table.checkStatus(r.ID, "", "resume", paused); err != nil {
		return nil, err
	}
	g, err := s.guest()
	if err != nil {
		return nil, err
	}
	if _, err := g.Resume(ctx, r); err != nil {
		return nil, err
	}
	s.table.setStatus(r.ID, "", func(st status) (status, bool) { return running, st == paused })
	return &emptypb.Empty{}, nil
}

// noCheckpoint says why checkpoints are refused.
const noCheckpoint = "the container runs in a confidential VM whose memory is encrypted and hidden from the host, " +
	"so the host can neither checkpoint nor restore it"

// Checkpoint is not possible for a confidential VM.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, toGRPC(fmt.Errorf("checkpoint of container %s: %s: %w", r.ID, noCheckpoint, errdefs.ErrNotImplemented))
}

// Kill signals a process.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	s.reconcile()
	_, p, err := s.table.snapshot(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	g, err := s.guest()
	if err != nil {
		if p.status == stopped {
			return nil, fmt.Errorf("%s: process already finished: %w", name(r.ID, r.ExecID), errdefs.ErrNotFound)
		}
		return nil, err
	}
	return g.Kill(ctx, r)
}

// forward asks the guest, once the host table knows the process: calls
// that carry no host resources differ only in the guest method.
func forward[R any](s *Service, id, execID string, call func(taskAPI.TTRPCTaskService) (R, error)) (_ R, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	var zero R
	if _, _, err := s.table.get(id, execID); err != nil {
		return zero, err
	}
	g, err := s.guest()
	if err != nil {
		return zero, err
	}
	return call(g)
}

// ResizePty resizes the guest pty of a terminal process.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return forward(s, r.ID, r.ExecID, func(g taskAPI.TTRPCTaskService) (*emptypb.Empty, error) { return g.ResizePty(ctx, r) })
}

// CloseIO closes a process's stdin. It acts on the host side only: the
// sandbox sees EOF after the bytes already read, half-closes the guest
// stream, and the guest closes the process's stdin after the last byte, so
// no input is lost (forwarding CloseIO to the guest could overtake data
// still in flight).
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	_, p, err := s.table.snapshot(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin && p.io != nil {
		p.io.CloseStdin()
	}
	return &emptypb.Empty{}, nil
}

// Update changes a container's resources in the guest.
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return forward(s, r.ID, "", func(g taskAPI.TTRPCTaskService) (*emptypb.Empty, error) { return g.Update(ctx, r) })
}

// Wait blocks until a process exits. Exits are learnt from the guest's
// event stream, so Wait keeps working, and still returns, when the VM dies.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (_ *taskAPI.WaitResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	// The record itself, not a copy: a Delete racing this Wait may remove
	// it from the table once the exit is out.
	p, err := s.table.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-s.pod.Forwarded():
		// Every exit event is published by now; the rest died with the VM.
		s.reconcile()
		<-p.exited
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Written before exited was closed and never after.
	return &taskAPI.WaitResponse{ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

// Stats returns the container's cgroup statistics from the guest.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return forward(s, r.ID, "", func(g taskAPI.TTRPCTaskService) (*taskAPI.StatsResponse, error) { return g.Stats(ctx, r) })
}

// Connect reports the shim's pid and the pod's VMM pid.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return &taskAPI.ConnectResponse{
		ShimPid: uint32(os.Getpid()),
		TaskPid: s.pod.VMMPid(),
		Version: version.Version,
	}, nil
}

// Shutdown ends the shim once it serves no task, unless the sandbox API
// owns the pod (then ShutdownSandbox ends it).
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	if s.table.len() > 0 || s.pod.ManagedBySandboxAPI() {
		return &emptypb.Empty{}, nil
	}
	if err := s.pod.Stop(ctx); err != nil {
		log.G(ctx).WithError(err).Warn("stopping the pod VM at shutdown")
	}
	s.sd.Shutdown()
	return &emptypb.Empty{}, nil
}

func toRunning(st status) (status, bool) { return running, st == created || st == starting }

func hasPodAnnotation(a map[string]string) bool {
	_, t := a[options.ContainerTypeAnnotation]
	_, id := a[options.SandboxIDAnnotation]
	return t || id
}

// toGRPC gives containerd errdefs codes it understands; guest errors that
// already carry a status keep it.
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToGRPC(err)
}
