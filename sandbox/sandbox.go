// Package sandbox is one pod in one VM: it owns the hypervisor.VM, the agent
// client and the host side of every container's root filesystem and stdio
// streams. The shim drives it; it knows neither QEMU nor containerd's ttrpc
// plumbing.
package sandbox

import (
	"context"
	"io"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Sandbox is one pod VM.
//
// Lifecycle: a Factory returns a Sandbox that runs nothing → Start boots the
// VM and sets the guest up → tasks are created, driven and deleted → Stop
// destroys the VM (idempotent) → Events is closed after the last event.
//
// Errors follow containerd's errdefs: an unknown container or exec is
// ErrNotFound, a duplicate ErrAlreadyExists, a call in the wrong state
// ErrFailedPrecondition. Errors from the guest keep their errdefs code.
type Sandbox interface {
	// Start boots the VM and returns once the guest agent has set the pod up.
	Start(ctx context.Context) error
	// CreateTask prepares the container's root filesystem and stdio in the
	// guest, then creates the task there. c is what the shim read of the
	// bundle and decided about the container; io carries the host-side stdio.
	CreateTask(ctx context.Context, r *taskAPI.CreateTaskRequest, c Container, io IO) (*taskAPI.CreateTaskResponse, error)
	// Exec adds a process to a running container, with its host-side stdio.
	Exec(ctx context.Context, r *taskAPI.ExecProcessRequest, io IO) error
	// Task is the guest's task API for every call that carries no host
	// resources (Start, Kill, Wait, State, Pids, Pause, Resume, Delete, ...).
	Task() taskAPI.TTRPCTaskService
	// Events delivers guest task events in the order the guest produced them.
	// When the VM dies, a TaskExit for every live process is delivered before
	// the channel closes.
	Events() <-chan Event
	// Stop destroys the VM and releases everything on the host.
	Stop(ctx context.Context) error
	// Wait blocks until the VM is gone.
	Wait(ctx context.Context) (hypervisor.ExitStatus, error)
	// Info describes the running pod VM.
	Info() hypervisor.Info
}

// Container is what the shim read and decided about a container before
// creating it: the sandbox reads no bundle spec and knows no CRI annotation.
type Container struct {
	// Spec is the bundle's config.json as the shim read it (the guest gets
	// these bytes) and Parsed its decoding; Parsed nil means the bundle has
	// none.
	Spec   []byte
	Parsed *specs.Spec
	// Pause is the pod's CRI sandbox (pause) container: the guest runs its
	// own in its place, with no root filesystem from the host.
	Pause bool
	// Image is the image the pod spec names for the container ("" when
	// none); a guest-pull runtime class pulls it in the guest.
	Image string
}

// IO is the host side of a process's stdio. Nil members are not connected.
// With Terminal set, Stderr is nil and Stdout carries the terminal.
type IO struct {
	Stdin    io.ReadCloser
	Stdout   io.WriteCloser
	Stderr   io.WriteCloser
	Terminal bool
}

// Event is one task event from the guest (e.g. *eventstypes.TaskExit).
type Event struct {
	Topic   string
	Message any
}

// Options describe the pod a Factory creates a Sandbox for.
type Options struct {
	ID        string // sandbox (pod) id
	Namespace string // containerd namespace
	// Bundle is the host bundle of the sandbox container (podsandbox mode) or
	// the sandbox bundle (sandboxer = "shim").
	Bundle      string
	Config      *configs.Config
	Spec        *specs.Spec       // sandbox container spec (hostname, namespaces); may be nil
	Annotations map[string]string // pod annotations (init-data, policy)
	NetNSPath   string
	// DNS is the pod's CRI dns_config; used under the sandbox API, where
	// containerd leaves /etc/resolv.conf to the sandbox controller.
	DNS *DNSConfig
	// StateDir is where the sandbox keeps what `delete` needs after a crash.
	StateDir string
	// SandboxAPI is set under containerd's sandbox API (sandboxer = "shim"),
	// where no sandbox container task exists: the VM's namespaces are the
	// pod's, and the pause process the guest starts for a shared pid
	// namespace sends events the host drops.
	SandboxAPI bool
}

// Factory creates a Sandbox; tests pass a fake.
type Factory func(ctx context.Context, opts Options) (Sandbox, error)
