package sandbox

import (
	"context"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"google.golang.org/protobuf/types/known/emptypb"
)

// guestTasks is the guest's task API, plus the host-side cleanup that
// follows deleting a container: its root filesystem image is detached.
type guestTasks struct {
	s *vmSandbox
}

func (g *guestTasks) guest() (taskAPI.TTRPCTaskService, error) {
	c, err := g.s.client()
	if err != nil {
		return nil, err
	}
	return c.Task(), nil
}

func (g *guestTasks) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	resp, err := t.Delete(ctx, r)
	if err == nil && r.ExecID == "" {
		// The guest has unmounted the rootfs; the hot-unplug needs the
		// guest's ACPI handshake (~0.3 s under TCG) and need not hold up
		// the answer: a pod being stopped deletes its containers first.
		g.s.releaseRootfs(ctx, r.ID)
	}
	return resp, err
}

// The remaining calls carry no host resources and go to the guest unchanged.

func (g *guestTasks) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.State(ctx, r)
}

func (g *guestTasks) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Create(ctx, r)
}

func (g *guestTasks) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Start(ctx, r)
}

func (g *guestTasks) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Pids(ctx, r)
}

func (g *guestTasks) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Pause(ctx, r)
}

func (g *guestTasks) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Resume(ctx, r)
}

func (g *guestTasks) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Checkpoint(ctx, r)
}

func (g *guestTasks) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Kill(ctx, r)
}

func (g *guestTasks) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Exec(ctx, r)
}

func (g *guestTasks) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.ResizePty(ctx, r)
}

func (g *guestTasks) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.CloseIO(ctx, r)
}

func (g *guestTasks) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Update(ctx, r)
}

func (g *guestTasks) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Wait(ctx, r)
}

func (g *guestTasks) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Stats(ctx, r)
}

func (g *guestTasks) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Connect(ctx, r)
}

func (g *guestTasks) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	t, err := g.guest()
	if err != nil {
		return nil, err
	}
	return t.Shutdown(ctx, r)
}
