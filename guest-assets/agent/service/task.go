package service

import (
	"context"
	"errors"
	"fmt"
	"os"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/guest-assets/agent/container"
	"github.com/coco-runtime/coco/guest-assets/agent/pausetask"
	"github.com/coco-runtime/coco/guest-assets/agent/spec"
	"github.com/coco-runtime/coco/guest-assets/agent/stdio"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// taskService wraps containerd's runc task service: it swaps the host's
// stdio fields for the guest FIFOs of the host's streams, checks that a
// container was prepared, runs the sandbox container itself when it can
// (pause), and removes the guest bundle after Delete. Every other call goes
// to the container's backend unchanged (route.go).
type taskService struct {
	taskAPI.TTRPCTaskService
	pause       *pausetask.Service // nil: the OCI runtime runs the sandbox container too
	streams     *stdio.Streams
	containers  *container.Manager
	runtime     string                          // the OCI runtime binary; "": runc
	waitRuntime func(ctx context.Context) error // nil: the OCI runtime is there
	// runtimeOptions name the runtime to the runc task service; nil: runc.
	runtimeOptions *anypb.Any
}

// fillStdio replaces each non-empty stdio field by the FIFO of the stream
// the host opened for it. The runc task service copies stdout and stderr
// together, so when only one of them has a stream the other goes to
// /dev/null.
func (t *taskService) fillStdio(id, execID string, terminal bool, fields ...*string) error {
	if out, errs := fields[1], fields[2]; !terminal && (*out == "") != (*errs == "") {
		defer func() {
			if *out == "" {
				*out = os.DevNull
			}
			if *errs == "" {
				*errs = os.DevNull
			}
		}()
	}
	kinds := []string{api.StreamStdin, api.StreamStdout, api.StreamStderr}
	for i, f := range fields {
		if *f == "" {
			continue
		}
		p, ok := t.streams.Path(id, execID, kinds[i])
		if !ok {
			name := execID
			if name == "" {
				name = "init"
			}
			return fmt.Errorf("%s: no %s stream open for %s/%s: open it on vsock port %d before the request: %w",
				kinds[i], kinds[i], id, name, api.StreamPort, errdefs.ErrFailedPrecondition)
		}
		*f = p
	}
	t.streams.Claim(id, execID)
	return nil
}

func (t *taskService) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	if !t.containers.Prepared(r.ID) {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s: call PrepareContainer before Create", r.ID)
	}
	if want := t.containers.BundlePath(r.ID); r.Bundle != want {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "bundle: %q is not the guest bundle; use %q from PrepareContainer", r.Bundle, want)
	}
	g := proto.Clone(r).(*taskAPI.CreateTaskRequest)
	// The host's options were refused (ValidateTask); these are the guest's.
	g.Options = t.runtimeOptions
	err := t.fillStdio(r.ID, "", r.Terminal, &g.Stdin, &g.Stdout, &g.Stderr)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	var resp *taskAPI.CreateTaskResponse
	spec := t.pauseSpec(ctx, r)
	if spec == nil && t.waitRuntime != nil {
		if err = t.waitRuntime(ctx); err != nil {
			t.streams.Release(r.ID, "")
			return nil, errgrpc.ToGRPC(err)
		}
	}
	switch {
	case spec != nil:
		resp, err = t.pause.CreateFromSpec(ctx, g, spec)
	case t.containers.IsSandbox(r.ID):
		if err = t.containers.MountPauseRootfs(r.ID); err == nil {
			resp, err = t.TTRPCTaskService.Create(ctx, g)
		}
	default:
		resp, err = t.TTRPCTaskService.Create(ctx, g)
	}
	if err != nil {
		t.streams.Release(r.ID, "")
		return nil, err
	}
	t.containers.Created(r.ID, int(resp.Pid))
	t.streams.Started(r.ID, "")
	return resp, nil
}

func (t *taskService) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	g := proto.Clone(r).(*taskAPI.ExecProcessRequest)
	if g.Spec != nil {
		v, err := t.containers.UnsealProcess(ctx, g.Spec.Value)
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		g.Spec.Value = v
	}
	if err := t.fillStdio(r.ID, r.ExecID, r.Terminal, &g.Stdin, &g.Stdout, &g.Stderr); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp, err := t.backend(r.ID).Exec(ctx, g)
	if err != nil {
		t.streams.Release(r.ID, r.ExecID)
	}
	return resp, err
}

func (t *taskService) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	resp, err := t.backend(r.ID).Start(ctx, r)
	if err == nil && r.ExecID != "" {
		// An exec opens its stdin at Start, not at Exec.
		t.streams.Started(r.ID, r.ExecID)
	}
	return resp, err
}

func (t *taskService) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	resp, err := t.backend(r.ID).Delete(ctx, r)
	if err != nil {
		if r.ExecID == "" && errdefs.IsNotFound(errgrpc.ToNative(err)) && t.containers.Prepared(r.ID) {
			// The host gave up on a create after PrepareContainer: the
			// bundle and its mounts go, so the rootfs disk can be unplugged.
			t.streams.ReleaseContainer(r.ID)
			if rerr := t.containers.Remove(ctx, r.ID); rerr != nil && !errdefs.IsNotFound(rerr) {
				log.G(ctx).WithError(rerr).WithField("container", r.ID).Warn("removing the bundle of a container never created")
			}
		}
		return nil, err
	}
	if r.ExecID != "" {
		t.streams.Release(r.ID, r.ExecID)
		return resp, nil
	}
	t.streams.ReleaseContainer(r.ID)
	if err := t.containers.Remove(ctx, r.ID); err != nil && !errdefs.IsNotFound(err) {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInternal, "container %s deleted but its bundle was not removed: %v", r.ID, err)
	}
	return resp, nil
}

// pauseSpec returns the bundle's spec when the agent runs the sandbox
// container itself: it is the sandbox container, has no stdio or terminal,
// and its spec needs nothing the pause task cannot do. nil means the OCI
// runtime runs it (the reason is logged).
func (t *taskService) pauseSpec(ctx context.Context, r *taskAPI.CreateTaskRequest) *specs.Spec {
	if t.pause == nil || !t.containers.IsSandbox(r.ID) {
		return nil
	}
	var (
		spec *specs.Spec
		err  error
	)
	if r.Terminal || r.Stdin != "" || r.Stdout != "" || r.Stderr != "" {
		err = errors.New("stdio requested")
	} else if spec, err = pausetask.LoadSpec(r.Bundle); err == nil {
		err = pausetask.Supported(spec)
	}
	if err != nil {
		log.G(ctx).WithField("id", r.ID).Infof("sandbox container runs under %s: %v", t.runtimeName(), err)
		return nil
	}
	return spec
}

func (t *taskService) runtimeName() string {
	if t.runtime == "" {
		return "runc"
	}
	return t.runtime
}

// Checkpoint is refused: the guest has no CRIU, and a host-chosen image
// path must not be written in the guest.
func (t *taskService) Checkpoint(context.Context, *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "checkpoint is not supported in the guest")
}

// Shutdown is a no-op: the VM's lifetime is DestroySandbox's business, and
// the runc task service would otherwise stop publishing events.
func (t *taskService) Shutdown(context.Context, *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// closeStdin is the stdio registry's CloseIO hook.
func (t *taskService) closeStdin(ctx context.Context, id, execID string) error {
	_, err := t.TTRPCTaskService.CloseIO(ctx, &taskAPI.CloseIORequest{ID: id, ExecID: execID, Stdin: true})
	if err != nil {
		return errgrpc.ToNative(err)
	}
	return nil
}

// Update applies the host's resource update without its device rules
// (spec.KeepDeviceRules): the container keeps the device cgroup the guest
// gave it.
func (t *taskService) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	if r.Resources != nil {
		kept, changed, err := spec.KeepDeviceRules(r.Resources.GetValue())
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		if changed {
			log.G(ctx).WithField("id", r.ID).Debug("resources.devices of an update ignored: the container keeps the guest's device rules")
			r = proto.Clone(r).(*taskAPI.UpdateTaskRequest)
			r.Resources.Value = kept
		}
	}
	return t.backend(r.ID).Update(ctx, r)
}
