package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/emptypb"
)

// guestTasks is the guest's task API, plus the host-side cleanup that
// follows deleting a container (its root filesystem image is detached) and
// a check that the guest still answers when a call runs out of time.
type guestTasks struct {
	s *vmSandbox
}

// GuestKillTimeout bounds a Kill in the guest. Signalling a process takes
// the agent milliseconds; a guest that has not answered in this time is
// hung, and a Kill that never returns would keep the pod from ever being
// stopped or removed (containerd kills every container first).
const GuestKillTimeout = 15 * time.Second

// call makes one guest call. When the caller gives up before the guest
// answers, the sandbox checks in the background that the guest is alive
// (vmSandbox.probe): a hung guest must not keep the pod from being stopped.
func call[Req, Resp any](g *guestTasks, ctx context.Context, r Req, m func(taskAPI.TTRPCTaskService, context.Context, Req) (Resp, error)) (Resp, error) {
	c, err := g.s.client()
	if err != nil {
		var zero Resp
		return zero, err
	}
	resp, err := m(c.Task(), ctx, r)
	if err != nil && ctx.Err() != nil {
		go g.s.probe(ctx)
	}
	return resp, err
}

func (g *guestTasks) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	resp, err := call(g, ctx, r, taskAPI.TTRPCTaskService.Delete)
	if err == nil && r.ExecID == "" {
		g.s.vols.forget(r.ID)
		// The guest has unmounted the rootfs; the hot-unplug needs the
		// guest's ACPI handshake (~0.3 s under TCG) and need not hold up
		// the answer: a pod being stopped deletes its containers first.
		g.s.releaseRootfs(ctx, r.ID)
		g.s.releaseDiskVolumes(ctx, r.ID)
	}
	return resp, err
}

func (g *guestTasks) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	kctx, cancel := context.WithTimeout(ctx, GuestKillTimeout)
	defer cancel()
	// call sees the caller's ctx: a probe follows only when the caller gave
	// up first; the Kill's own bound stops the VM here, once.
	resp, err := call(g, ctx, r, func(t taskAPI.TTRPCTaskService, _ context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
		return t.Kill(kctx, r)
	})
	if err != nil && ctx.Err() == nil && errors.Is(kctx.Err(), context.DeadlineExceeded) {
		// The VM's end reaches the pod as for a VMM that died: its
		// processes exit, and the next Kill finds them gone.
		g.s.stopHungVM(ctx, fmt.Sprintf("the guest agent did not answer Kill of %s within %s", processName(r.ID, r.ExecID), GuestKillTimeout))
		return nil, fmt.Errorf("kill %s: the guest did not answer within %s; the VM is hung and has been stopped: %w",
			processName(r.ID, r.ExecID), GuestKillTimeout, errdefs.ErrUnavailable)
	}
	return resp, err
}

// Wait blocks until the process exits: a caller that stops waiting says
// nothing about the guest, so no probe follows.
func (g *guestTasks) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	c, err := g.s.client()
	if err != nil {
		return nil, err
	}
	return c.Task().Wait(ctx, r)
}

func processName(id, execID string) string {
	if execID == "" {
		return id
	}
	return id + "/" + execID
}

// The remaining calls carry no host resources and go to the guest unchanged.

func (g *guestTasks) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.State)
}

func (g *guestTasks) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Create)
}

func (g *guestTasks) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Start)
}

func (g *guestTasks) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Pids)
}

func (g *guestTasks) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Pause)
}

func (g *guestTasks) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Resume)
}

func (g *guestTasks) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Checkpoint)
}

func (g *guestTasks) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Exec)
}

func (g *guestTasks) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.ResizePty)
}

func (g *guestTasks) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.CloseIO)
}

func (g *guestTasks) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Update)
}

func (g *guestTasks) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Stats)
}

func (g *guestTasks) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Connect)
}

func (g *guestTasks) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return call(g, ctx, r, taskAPI.TTRPCTaskService.Shutdown)
}
