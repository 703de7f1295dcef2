package service

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

const (
	maxProcessSpec = 1 << 20
	maxResources   = 64 << 10
)

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// ValidateTask checks the host-controlled fields of containerd task API
// requests that the runc task service would otherwise trust: ids (they
// become guest paths), the bundle and rootfs (only what PrepareContainer
// made), runtime options (they name binaries), the exec process spec.
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
	switch r := req.(type) {
	case *taskAPI.CreateTaskRequest:
		return validateCreate(r)
	case *taskAPI.ExecProcessRequest:
		return validateExec(r)
	case *taskAPI.KillRequest:
		if r.Signal == 0 || r.Signal > 64 {
			return invalid("signal", "%d is not a signal number (1-64)", r.Signal)
		}
	case *taskAPI.UpdateTaskRequest:
		if r.Resources == nil || len(r.Resources.GetValue()) > maxResources {
			return invalid("resources", "want a resources message of at most %d bytes", maxResources)
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

func validateExec(r *taskAPI.ExecProcessRequest) error {
	if r.ExecID == "" {
		return invalid("exec_id", "empty")
	}
	if r.Spec == nil || len(r.Spec.GetValue()) == 0 {
		return invalid("spec", "missing process spec")
	}
	if len(r.Spec.GetValue()) > maxProcessSpec {
		return invalid("spec", "%d bytes, at most %d", len(r.Spec.GetValue()), maxProcessSpec)
	}
	if !strings.HasSuffix(r.Spec.GetTypeUrl(), "opencontainers/runtime-spec/1/Process") {
		return invalid("spec.type_url", "%q is not an OCI process spec", r.Spec.GetTypeUrl())
	}
	var p specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &p); err != nil {
		return invalid("spec", "not an OCI process spec: %v", err)
	}
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
