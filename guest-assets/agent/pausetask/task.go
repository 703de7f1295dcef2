//go:build linux

package pausetask

import (
	"context"
	"os"
	"path/filepath"

	"github.com/containerd/cgroups/v3/cgroup2"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The task API for the sandbox container. Create is in pausetask.go; what a
// pause process cannot do (exec, pause, update, terminal, checkpoint) is
// refused with the reason.

// getInit is the sandbox container's task; it runs no execs.
func (s *Service) getInit(id, execID string) (*pauseTask, error) {
	if execID != "" {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "exec %s in sandbox container %s: no such exec", execID, id)
	}
	return s.get(id)
}

// Start marks the task started; the pause process runs from Create on (it
// does nothing but wait, so there is nothing to hold back).
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	t, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	already := t.started
	t.started = true
	s.mu.Unlock()
	if already {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "sandbox container %s already started", r.ID)
	}
	s.publish(ctx, &eventstypes.TaskStart{ContainerID: t.id, Pid: uint32(t.proc.Pid)})
	return &taskAPI.StartResponse{Pid: uint32(t.proc.Pid)}, nil
}

// State reports the pause process as runc would report a container.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	t, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	resp := &taskAPI.StateResponse{ID: t.id, Bundle: t.bundle, Pid: uint32(t.proc.Pid)}
	select {
	case <-t.exited:
		resp.Status = task.Status_STOPPED
		resp.ExitStatus, resp.ExitedAt = t.status, timestamppb.New(t.exitedAt)
	default:
		s.mu.Lock()
		if t.started {
			resp.Status = task.Status_RUNNING
		} else {
			resp.Status = task.Status_CREATED
		}
		s.mu.Unlock()
	}
	return resp, nil
}

// Kill signals the pause process. As PID 1 of its pid namespace it ignores
// signals it has no handler for, except SIGKILL; coco-pause exits on
// SIGTERM and SIGINT.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	t, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-t.exited:
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "sandbox container %s: process already finished", r.ID)
	default:
	}
	if err := t.proc.Signal(unix.Signal(r.Signal)); err != nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "sandbox container %s: %v", r.ID, err)
	}
	return &emptypb.Empty{}, nil
}

// Wait blocks until the pause process has exited and its TaskExit is
// queued for the host: the host must never see Wait return before the exit.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	t, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-t.exitSent:
	case <-ctx.Done():
		return nil, errgrpc.ToGRPC(ctx.Err())
	}
	return &taskAPI.WaitResponse{ExitStatus: t.status, ExitedAt: timestamppb.New(t.exitedAt)}, nil
}

// Delete forgets the exited sandbox container and removes its cgroup.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	t, err := s.getInit(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-t.exited:
	default:
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "sandbox container %s is still running: kill it first", r.ID)
	}
	<-t.exitSent
	if t.cgroup != "" {
		if err := os.Remove(t.cgroup); err != nil && !os.IsNotExist(err) {
			return nil, errgrpc.ToGRPCf(errdefs.ErrInternal, "sandbox container %s: remove cgroup: %v", r.ID, err)
		}
	}
	s.mu.Lock()
	s.t = nil
	s.mu.Unlock()
	exitedAt := timestamppb.New(t.exitedAt)
	s.publish(ctx, &eventstypes.TaskDelete{ContainerID: t.id, ID: t.id, Pid: uint32(t.proc.Pid), ExitStatus: t.status, ExitedAt: exitedAt})
	return &taskAPI.DeleteResponse{Pid: uint32(t.proc.Pid), ExitStatus: t.status, ExitedAt: exitedAt}, nil
}

// Pids lists the pause process.
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: uint32(t.proc.Pid)}}}, nil
}

// Stats reads the pause process's cgroup.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if t.cgroup == "" {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "sandbox container %s: cgroup does not exist", r.ID)
	}
	rel, err := filepath.Rel(s.cfg.CgroupRoot, t.cgroup)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	m, err := cgroup2.Load("/"+rel, cgroup2.WithMountpoint(s.cfg.CgroupRoot))
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	st, err := m.Stat()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	a, err := typeurl.MarshalAny(st)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: typeurl.MarshalProto(a)}, nil
}

// Connect names the agent and the pause process.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: uint32(t.proc.Pid)}, nil
}

func (s *Service) refuse(id, what string) error {
	if _, err := s.get(id); err != nil {
		return err
	}
	return errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "%s is not supported for the sandbox container %s (it only holds the pod's namespaces)", what, id)
}

func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return nil, s.refuse(r.ID, "exec")
}

func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return nil, s.refuse(r.ID, "pause")
}

func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return nil, s.refuse(r.ID, "resume")
}

func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return nil, s.refuse(r.ID, "update")
}

func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return nil, s.refuse(r.ID, "a terminal")
}

func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return nil, s.refuse(r.ID, "stdio")
}

func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, s.refuse(r.ID, "checkpoint")
}

// Shutdown has nothing to do: the agent owns the VM's lifetime.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

var _ taskAPI.TTRPCTaskService = (*Service)(nil)
