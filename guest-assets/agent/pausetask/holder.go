package pausetask

import (
	"context"
	"fmt"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// PIDHolder holds the pod's shared pid namespace when no sandbox container
// does (containerd's sandbox API, SetupSandbox vm_namespaces): a pause
// process, run by a Service under the sandbox's id (whose events the host
// drops), started when the first container joins the pod's pid namespace.
// Pods whose containers each have their own, the kubelet's default, never
// start it.
type PIDHolder struct {
	pause *Service // nil: this agent runs no pause process

	mu  sync.Mutex
	pid int
}

// NewPIDHolder returns a holder whose pause process s runs; s may be nil.
func NewPIDHolder(s *Service) *PIDHolder { return &PIDHolder{pause: s} }

// Get returns the holder's pid, starting pause on the first call (it is
// container.Config.PodPIDHolder).
func (h *PIDHolder) Get(ctx context.Context, sandboxID string) (int, error) {
	if h.pause == nil {
		return 0, fmt.Errorf("no pause process to hold the pod's pid namespace (NativePause is off): %w", errdefs.ErrNotImplemented)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pid != 0 {
		st, err := h.pause.State(ctx, &taskAPI.StateRequest{ID: sandboxID})
		if err != nil || st.GetStatus() != task.Status_RUNNING {
			return 0, fmt.Errorf("the pod's pid namespace is gone: its pause process (pid %d) exited: %w", h.pid, errdefs.ErrFailedPrecondition)
		}
		return h.pid, nil
	}
	spec := &specs.Spec{
		Process: &specs.Process{Args: []string{"pause"}, Cwd: "/"},
		Linux:   &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}}},
	}
	created, err := h.pause.CreateFromSpec(ctx, &taskAPI.CreateTaskRequest{ID: sandboxID}, spec)
	if err != nil {
		return 0, fmt.Errorf("start the pause process that holds the pod's pid namespace: %w", errgrpc.ToNative(err))
	}
	if _, err := h.pause.Start(ctx, &taskAPI.StartRequest{ID: sandboxID}); err != nil {
		return 0, errgrpc.ToNative(err)
	}
	h.pid = int(created.GetPid())
	log.G(ctx).WithField("sandbox", sandboxID).Infof("pod pid namespace held by pause, pid %d", h.pid)
	return h.pid, nil
}
