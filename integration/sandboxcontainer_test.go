//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/virtcontainers/agent"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// startSandboxContainer creates and starts a sandbox (pause) container in
// the guest from the agent's own rootfs, as a host does with containerd's
// pause container in podsandbox mode, and returns its guest pid. Its spec
// asks for the pid, ipc and uts namespaces other containers join.
func startSandboxContainer(ctx context.Context, c *agent.Client, id string) (uint32, error) {
	s := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: []string{"/pause"}, Cwd: "/", Env: []string{"PATH=/"},
			User:            specs.User{UID: 65535, GID: 65535},
			NoNewPrivileges: true,
		},
		Root: &specs.Root{Path: "rootfs", Readonly: true},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
		},
	}
	spec, err := json.Marshal(&s)
	if err != nil {
		return 0, err
	}
	prep, err := c.Agent().PrepareContainer(ctx, &api.PrepareContainerRequest{
		ContainerId: id, Spec: spec, SandboxContainer: true,
		Rootfs: &api.Rootfs{Source: &api.Rootfs_Agent{Agent: &emptypb.Empty{}}},
	})
	if err != nil {
		return 0, fmt.Errorf("prepare sandbox container %s: %w", id, err)
	}
	created, err := c.Task().Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: prep.GetBundle()})
	if err != nil {
		return 0, fmt.Errorf("create sandbox container %s: %w", id, err)
	}
	if _, err := c.Task().Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		return 0, fmt.Errorf("start sandbox container %s: %w", id, err)
	}
	return created.GetPid(), nil
}
