//go:build integration

package harness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRI is a client of containerd's CRI plugin: the same gRPC services and
// calls crictl and the kubelet use.
type CRI struct {
	Runtime runtimeapi.RuntimeServiceClient
	Image   runtimeapi.ImageServiceClient
	conn    *grpc.ClientConn
}

// DialCRI connects to containerd's gRPC socket.
func DialCRI(socket string) (*CRI, error) {
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("harness: dial CRI at %s: %w", socket, err)
	}
	return &CRI{
		Runtime: runtimeapi.NewRuntimeServiceClient(conn),
		Image:   runtimeapi.NewImageServiceClient(conn),
		conn:    conn,
	}, nil
}

// Close closes the connection.
func (c *CRI) Close() error { return c.conn.Close() }

// RemoveAllPods stops and removes every pod sandbox (and so its containers).
func (c *CRI) RemoveAllPods(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	resp, err := c.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("harness: list pods: %w", err)
	}
	var errs []error
	for _, p := range resp.Items {
		if _, err := c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Errorf("harness: stop pod %s: %w", p.Id, err))
		}
		if _, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, fmt.Errorf("harness: remove pod %s: %w", p.Id, err))
		}
	}
	return errors.Join(errs...)
}

// PodOptions vary the pod config the tests use.
type PodOptions struct {
	Name        string
	LogDir      string
	SharePID    bool // NamespaceMode_POD for PID instead of per-container
	Annotations map[string]string
}

// PodConfig is a minimal pod sandbox config in the k8s.io style.
func PodConfig(o PodOptions) *runtimeapi.PodSandboxConfig {
	pid := runtimeapi.NamespaceMode_CONTAINER
	if o.SharePID {
		pid = runtimeapi.NamespaceMode_POD
	}
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: o.Name, Namespace: "coco-it", Uid: o.Name + "-" + randHex(4), Attempt: 0},
		Hostname:     o.Name,
		LogDirectory: o.LogDir,
		Annotations:  o.Annotations,
		Labels:       map[string]string{"coco-it": "1"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: pid},
			},
		},
	}
}

// ContainerConfig runs args in the busybox image; logPath is relative to the
// pod's log directory.
func ContainerConfig(name, logPath string, args ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: BusyboxImage},
		Command:  args,
		LogPath:  logPath,
		Linux:    &runtimeapi.LinuxContainerConfig{},
	}
}

// Pod is a running pod sandbox and what it was made from.
type Pod struct {
	ID      string
	Config  *runtimeapi.PodSandboxConfig
	Handler string
}

// RunPod runs a pod sandbox under handler.
func (c *CRI) RunPod(ctx context.Context, handler string, cfg *runtimeapi.PodSandboxConfig) (*Pod, error) {
	resp, err := c.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		return nil, err
	}
	return &Pod{ID: resp.PodSandboxId, Config: cfg, Handler: handler}, nil
}

// StartContainer creates and starts a container in pod and returns its id.
func (c *CRI) StartContainer(ctx context.Context, pod *Pod, cfg *runtimeapi.ContainerConfig) (string, error) {
	// Like the kubelet, give the container the pod's namespace modes: the
	// zero value of NamespaceMode is POD, so leaving them out would share
	// the PID namespace behind the pod's back.
	if cfg.Linux != nil && cfg.Linux.SecurityContext == nil {
		cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: pod.Config.GetLinux().GetSecurityContext().GetNamespaceOptions(),
		}
	}
	cr, err := c.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.ID, Config: cfg, SandboxConfig: pod.Config,
	})
	if err != nil {
		return "", fmt.Errorf("CreateContainer %s: %w", cfg.Metadata.Name, err)
	}
	if _, err := c.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		return cr.ContainerId, fmt.Errorf("StartContainer %s: %w", cfg.Metadata.Name, err)
	}
	return cr.ContainerId, nil
}

// Exec runs cmd in a container and returns stdout, stderr and the exit code.
func (c *CRI) Exec(ctx context.Context, id string, timeout time.Duration, cmd ...string) (string, string, int32, error) {
	resp, err := c.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: int64(timeout / time.Second)})
	if err != nil {
		return "", "", -1, err
	}
	return string(resp.Stdout), string(resp.Stderr), resp.ExitCode, nil
}

// WaitExited polls until the container is EXITED and returns its status.
func (c *CRI) WaitExited(ctx context.Context, id string, limit time.Duration) (*runtimeapi.ContainerStatus, error) {
	deadline := time.Now().Add(limit)
	for {
		resp, err := c.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return nil, err
		}
		if resp.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			return resp.Status, nil
		}
		if time.Now().After(deadline) {
			return resp.Status, fmt.Errorf("container %s still %s after %s", id, resp.Status.State, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RemovePod stops and removes a pod sandbox.
func (c *CRI) RemovePod(ctx context.Context, id string) error {
	if _, err := c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("StopPodSandbox: %w", err)
	}
	if _, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("RemovePodSandbox: %w", err)
	}
	return nil
}
