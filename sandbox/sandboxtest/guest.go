package sandboxtest

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// guest is the fake guest's task API, with the error codes the guest's
// runc task service gives, sent over ttrpc as gRPC statuses.
type guest Sandbox

var _ taskAPI.TTRPCTaskService = (*guest)(nil)

// sb counts the call: tests check that host-side refusals never reach it.
func (g *guest) sb() *Sandbox {
	g.calls.Add(1)
	return (*Sandbox)(g)
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToGRPC(err)
}

func (g *guest) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	s := g.sb()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wrap(err)
	}
	resp := &taskAPI.StateResponse{ID: p.id, Bundle: "/run/guest/" + r.ID, Pid: 1000, Status: statusOf(p.status), ExitStatus: p.code}
	if !p.at.IsZero() {
		resp.ExitedAt = protobuf.ToTimestamp(p.at)
	}
	return resp, nil
}

func (g *guest) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return nil, wrap(fmt.Errorf("fake guest: Create goes through Sandbox.CreateTask: %w", errdefs.ErrNotImplemented))
}

func (g *guest) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s := g.sb()
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wrap(err)
	}
	if p.status != "created" {
		return nil, wrap(fmt.Errorf("%s is %s: %w", p.id, p.status, errdefs.ErrFailedPrecondition))
	}
	if err := s.startLocked(c, p); err != nil {
		return nil, wrap(err)
	}
	return &taskAPI.StartResponse{Pid: 1000}, nil
}

func (g *guest) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s := g.sb()
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wrap(err)
	}
	if p.status == "running" || p.status == "paused" {
		return nil, wrap(fmt.Errorf("cannot delete a running process: %w", errdefs.ErrFailedPrecondition))
	}
	resp := &taskAPI.DeleteResponse{Pid: 1000, ExitStatus: p.code}
	if !p.at.IsZero() {
		resp.ExitedAt = protobuf.ToTimestamp(p.at)
	}
	if r.ExecID != "" {
		delete(c.execs, r.ExecID)
		return resp, nil
	}
	delete(s.containers, r.ID)
	s.emit(&eventstypes.TaskDelete{ContainerID: r.ID, Pid: 1000, ExitStatus: p.code, ExitedAt: resp.ExitedAt})
	return resp, nil
}

func (g *guest) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	s := g.sb()
	s.mu.Lock()
	defer s.mu.Unlock()
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, wrap(err)
	}
	resp := &taskAPI.PidsResponse{}
	if c.init.status != "stopped" {
		resp.Processes = append(resp.Processes, &task.ProcessInfo{Pid: 1000})
	}
	return resp, nil
}

func (g *guest) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return g.setPaused(r.ID, true)
}

func (g *guest) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return g.setPaused(r.ID, false)
}

func (g *guest) setPaused(id string, pause bool) (*emptypb.Empty, error) {
	s := g.sb()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, p, err := s.lookup(id, "")
	if err != nil {
		return nil, wrap(err)
	}
	from, to := "running", "paused"
	if !pause {
		from, to = to, from
	}
	if p.status != from {
		return nil, wrap(fmt.Errorf("container %s is %s, not %s: %w", id, p.status, from, errdefs.ErrFailedPrecondition))
	}
	p.status = to
	if pause {
		s.emit(&eventstypes.TaskPaused{ContainerID: id})
	} else {
		s.emit(&eventstypes.TaskResumed{ContainerID: id})
	}
	return &emptypb.Empty{}, nil
}

func (g *guest) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, wrap(errdefs.ErrNotImplemented)
}

func (g *guest) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	s := g.sb()
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wrap(err)
	}
	if p.status == "stopped" {
		return nil, wrap(fmt.Errorf("process already finished: %w", errdefs.ErrNotFound))
	}
	if p.status == "created" && p == c.init {
		// runc kills a created container's init too.
		p.status = "running"
	}
	s.exitLocked(c, p, 128+r.Signal)
	return &emptypb.Empty{}, nil
}

func (g *guest) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return nil, wrap(fmt.Errorf("fake guest: Exec goes through Sandbox.Exec: %w", errdefs.ErrNotImplemented))
}

func (g *guest) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	s := g.sb()
	s.mu.Lock()
	defer s.mu.Unlock()
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, wrap(err)
	}
	if !p.io.Terminal {
		return nil, wrap(fmt.Errorf("%s has no terminal: %w", p.id, errdefs.ErrFailedPrecondition))
	}
	return &emptypb.Empty{}, nil
}

func (g *guest) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return nil, wrap(fmt.Errorf("fake guest: stdin ends with its stream, not CloseIO: %w", errdefs.ErrNotImplemented))
}

func (g *guest) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	s := g.sb()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, err := s.lookup(r.ID, ""); err != nil {
		return nil, wrap(err)
	}
	return &emptypb.Empty{}, nil
}

func (g *guest) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	s := g.sb()
	s.mu.Lock()
	_, p, err := s.lookup(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, wrap(err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, wrap(ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.WaitResponse{ExitStatus: p.code, ExitedAt: protobuf.ToTimestamp(p.at)}, nil
}

func (g *guest) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	s := g.sb()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, _, err := s.lookup(r.ID, ""); err != nil {
		return nil, wrap(err)
	}
	return &taskAPI.StatsResponse{}, nil
}

func (g *guest) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return &taskAPI.ConnectResponse{ShimPid: 1, TaskPid: 1000}, nil
}

func (g *guest) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}
