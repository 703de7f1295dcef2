package agent

import (
	"context"
	"encoding/json"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// DefaultSandboxSpec is a pause container spec for pods whose sandbox spec
// the host does not have (containerd's shim sandboxer mode): new pid, ipc,
// uts and mount namespaces, the agent's /pause, the pod hostname. The guest
// rewrites it like any other spec.
func DefaultSandboxSpec(hostname string) []byte {
	s := specs.Spec{
		Version:  specs.Version,
		Hostname: hostname,
		Process: &specs.Process{
			Args: []string{"/pause"}, Cwd: "/", Env: []string{"PATH=/"},
			User:            specs.User{UID: 65535, GID: 65535},
			NoNewPrivileges: true,
		},
		Root: &specs.Root{Path: "rootfs", Readonly: true},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	b, _ := json.Marshal(&s) // a fixed value: cannot fail
	return b
}

// StartSandboxContainer creates and starts the pod's sandbox (pause)
// container in the guest from the agent's own rootfs, without stdio. Other
// containers join its namespaces. spec nil uses DefaultSandboxSpec. It
// returns the guest pid.
func (c *Client) StartSandboxContainer(ctx context.Context, id string, spec []byte) (uint32, error) {
	if spec == nil {
		spec = DefaultSandboxSpec("")
	}
	prep, err := c.agent.PrepareContainer(ctx, &api.PrepareContainerRequest{
		ContainerId: id, Spec: spec, SandboxContainer: true,
		Rootfs: &api.Rootfs{Source: &api.Rootfs_Agent{Agent: &emptypb.Empty{}}},
	})
	if err != nil {
		return 0, fmt.Errorf("prepare sandbox container %s: %w", id, err)
	}
	created, err := c.task.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: prep.GetBundle()})
	if err != nil {
		return 0, fmt.Errorf("create sandbox container %s: %w", id, err)
	}
	if _, err := c.task.Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		c.task.Delete(ctx, &taskAPI.DeleteRequest{ID: id})
		return 0, fmt.Errorf("start sandbox container %s: %w", id, err)
	}
	return created.GetPid(), nil
}
