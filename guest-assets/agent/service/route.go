package service

import (
	"context"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Task API calls go to the service that runs the container: the agent's own
// pause task for the sandbox container (see pausetask), the runc task
// service for everything else. Calls that need more than routing are in
// task.go.

// backend is the service that owns container id.
func (t *taskService) backend(id string) taskAPI.TTRPCTaskService {
	if t.pause != nil && t.pause.Has(id) {
		return t.pause
	}
	return t.TTRPCTaskService
}

func (t *taskService) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return t.backend(r.ID).State(ctx, r)
}

func (t *taskService) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return t.backend(r.ID).Pids(ctx, r)
}

func (t *taskService) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return t.backend(r.ID).Pause(ctx, r)
}

func (t *taskService) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return t.backend(r.ID).Resume(ctx, r)
}

func (t *taskService) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return t.backend(r.ID).Kill(ctx, r)
}

func (t *taskService) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return t.backend(r.ID).ResizePty(ctx, r)
}

func (t *taskService) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return t.backend(r.ID).CloseIO(ctx, r)
}

func (t *taskService) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	return t.backend(r.ID).Wait(ctx, r)
}

func (t *taskService) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return t.backend(r.ID).Stats(ctx, r)
}

func (t *taskService) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return t.backend(r.ID).Connect(ctx, r)
}
