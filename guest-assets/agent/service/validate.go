package service

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/guest-assets/agent/container"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	vcpolicy "github.com/coco-runtime/coco/virtcontainers/policy"
)

const (
	maxProcessSpec = 1 << 20
	maxResources   = 64 << 10
)

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// validator is the gate's Validator: ValidateTask, then the facts an
// exec's policy input needs.
type validator struct{ containers *container.Manager }

// check validates req and, for an exec, adds the container's own process
// to the policy input as container_process: the policy compares the exec
// with it, field by field (configs/policies/README.md).
func (v validator) check(ctx context.Context, method string, req proto.Message) (context.Context, error) {
	if err := ValidateTask(method, req); err != nil {
		return ctx, err
	}
	if r, ok := req.(*taskAPI.ExecProcessRequest); ok && v.containers != nil {
		if p, ok := v.containers.Process(r.ID); ok {
			ctx = vcpolicy.WithFacts(ctx, vcpolicy.Facts{"container_process": json.RawMessage(p)})
		}
	}
	return ctx, nil
}

// ValidateTask checks the host-controlled fields of a request before the
// policy sees it. Every JSON document in it (the OCI spec of
// PrepareContainer, an exec's process, UpdateTask's resources) is decoded
// strictly and its bytes replaced by their canonical form, in place: the
// policy and the runtime then read the same bytes. For the containerd task
// API it also checks what the runc task service would otherwise trust: ids
// (they become guest paths), the bundle and rootfs (only what
// PrepareContainer made), runtime options (they name binaries), the exec
// process spec.
func ValidateTask(method string, req proto.Message) error {
	if r, ok := req.(interface{ GetID() string }); ok {
		id := r.GetID()
		optional := strings.HasSuffix(method, "/Shutdown") || strings.HasSuffix(method, "/Connect")
		if !(optional && id == "") {
			if err := api.ValidateID("id", id); err != nil {
				return err
			}
		}
	}
	if r, ok := req.(interface{ GetExecID() string }); ok && r.GetExecID() != "" {
		if err := api.ValidateID("exec_id", r.GetExecID()); err != nil {
			return err
		}
	}
	// Bounds before parsing.
	switch r := req.(type) {
	case *taskAPI.ExecProcessRequest:
		if r.ExecID == "" {
			return invalid("exec_id", "empty")
		}
		if r.Spec == nil || len(r.Spec.GetValue()) == 0 {
			return invalid("spec", "missing process spec")
		}
		if len(r.Spec.GetValue()) > maxProcessSpec {
			return invalid("spec", "%d bytes, at most %d", len(r.Spec.GetValue()), maxProcessSpec)
		}
	case *taskAPI.UpdateTaskRequest:
		if r.Resources == nil || len(r.Resources.GetValue()) == 0 || len(r.Resources.GetValue()) > maxResources {
			return invalid("resources", "want a resources document of 1 to %d bytes", maxResources)
		}
	}
	docs, err := vcpolicy.Canonicalize(req)
	if err != nil {
		return err
	}
	switch r := req.(type) {
	case *taskAPI.CreateTaskRequest:
		return validateCreate(r)
	case *taskAPI.ExecProcessRequest:
		return validateExec(r, docs["spec"].(*specs.Process))
	case *taskAPI.KillRequest:
		if r.Signal == 0 || r.Signal > 64 {
			return invalid("signal", "%d is not a signal number (1-64)", r.Signal)
		}
	case *taskAPI.ResizePtyRequest:
		if r.Width > 0xffff || r.Height > 0xffff {
			return invalid("width/height", "%dx%d is out of range (at most 65535)", r.Width, r.Height)
		}
	}
	return nil
}

func validateCreate(r *taskAPI.CreateTaskRequest) error {
	if err := api.ValidateAbsPath("bundle", r.Bundle); err != nil {
		return err
	}
	if len(r.Rootfs) > 0 {
		return invalid("rootfs", "host mounts are not accepted; the guest mounts the root filesystem named in PrepareContainer")
	}
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return invalid("checkpoint", "restoring from a checkpoint is not supported in the guest")
	}
	if r.Options != nil && len(r.Options.GetValue()) > 0 {
		return invalid("options", "runtime options (%s) are not accepted by the guest; the host must clear them", r.Options.GetTypeUrl())
	}
	if r.Terminal && r.Stderr != "" {
		return invalid("stderr", "must be empty with terminal=true (the terminal carries both outputs)")
	}
	return nil
}

func validateExec(r *taskAPI.ExecProcessRequest, p *specs.Process) error {
	if len(p.Args) == 0 {
		return invalid("spec.args", "empty")
	}
	if p.Cwd != "" && !path.IsAbs(p.Cwd) {
		return invalid("spec.cwd", "%q must be absolute", p.Cwd)
	}
	if r.Terminal && r.Stderr != "" {
		return invalid("stderr", "must be empty with terminal=true (the terminal carries both outputs)")
	}
	return nil
}
