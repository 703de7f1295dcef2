// Package sandboxsvc is containerd's sandbox API
// (containerd.runtime.sandbox.v1.Sandbox), used when the runtime handler sets
// `sandboxer = "shim"`: containerd asks the shim for the pod directly
// instead of creating a pause container. It serves on the same ttrpc server
// as the task API and shares the pod with it.
package sandboxsvc

import (
	"context"
	"fmt"
	goruntime "runtime"
	"strconv"
	"time"

	sandboxAPI "github.com/containerd/containerd/api/runtime/sandbox/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/sandbox"
	"github.com/coco-runtime/coco/shim/options"
	"github.com/coco-runtime/coco/shim/pod"
)

// Sandbox states as containerd's CRI plugin spells them.
const (
	stateReady    = "SANDBOX_READY"
	stateNotReady = "SANDBOX_NOTREADY"
)

// stopTimeout bounds StopSandbox when containerd gives no timeout.
const stopTimeout = 30 * time.Second

// shutdownGrace is how long ShutdownSandbox lets its answer reach containerd
// before the shim exits.
const shutdownGrace = 200 * time.Millisecond

var _ sandboxAPI.TTRPCSandboxService = (*Service)(nil)

// Service implements the sandbox API for the shim's pod.
type Service struct {
	pod *pod.Pod
	sd  shutdown.Service
}

// New returns the sandbox service of p.
func New(p *pod.Pod, sd shutdown.Service) *Service {
	return &Service{pod: p, sd: sd}
}

// RegisterTTRPC registers the service on the shim's server.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	sandboxAPI.RegisterTTRPCSandboxService(server, s)
	return nil
}

// check answers NotFound for a sandbox id this shim does not serve.
func (s *Service) check(id string) error {
	if cur := s.pod.ID(); cur == "" || cur != id {
		return fmt.Errorf("sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	return nil
}

// CreateSandbox creates the pod's sandbox; the VM boots in StartSandbox.
func (s *Service) CreateSandbox(ctx context.Context, r *sandboxAPI.CreateSandboxRequest) (_ *sandboxAPI.CreateSandboxResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := identifiers.Validate(r.SandboxID); err != nil {
		return nil, fmt.Errorf("sandbox id: %w", err)
	}
	pc, err := options.DecodePodConfig(r.Options)
	if err != nil {
		return nil, err
	}
	spec, err := options.ReadSpec(r.BundlePath)
	if err != nil {
		return nil, err
	}
	annotations := make(map[string]string, len(pc.Annotations)+len(r.Annotations))
	for k, v := range pc.Annotations {
		annotations[k] = v
	}
	for k, v := range r.Annotations {
		annotations[k] = v
	}
	if spec == nil {
		spec = &specs.Spec{Hostname: pc.Hostname, Annotations: annotations}
	}
	// The runtime options reached only `start`, which saved them in the bundle.
	cfg, err := s.pod.LoadConfig(ctx, nil, r.BundlePath)
	if err != nil {
		return nil, err
	}
	opts := sandbox.Options{
		ID:          r.SandboxID,
		Namespace:   s.pod.Namespace(),
		Bundle:      r.BundlePath,
		Config:      cfg,
		Spec:        spec,
		Annotations: annotations,
		NetNSPath:   r.NetnsPath,
		DNS:         sandboxDNS(pc.DNS),
		StateDir:    s.pod.StateDir(r.SandboxID),
		SandboxAPI:  true,
	}
	if err := s.pod.Create(ctx, opts, true); err != nil {
		return nil, err
	}
	return &sandboxAPI.CreateSandboxResponse{}, nil
}

// StartSandbox boots the VM; the pid is the VMM's.
func (s *Service) StartSandbox(ctx context.Context, r *sandboxAPI.StartSandboxRequest) (_ *sandboxAPI.StartSandboxResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.check(r.SandboxID); err != nil {
		return nil, err
	}
	if err := s.pod.Start(ctx); err != nil {
		return nil, err
	}
	return &sandboxAPI.StartSandboxResponse{
		Pid:       s.pod.VMMPid(),
		CreatedAt: protobuf.ToTimestamp(s.pod.CreatedAt()),
	}, nil
}

// Platform is the guest's platform: same architecture as the host.
func (s *Service) Platform(ctx context.Context, r *sandboxAPI.PlatformRequest) (_ *sandboxAPI.PlatformResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.check(r.SandboxID); err != nil {
		return nil, err
	}
	return &sandboxAPI.PlatformResponse{Platform: &types.Platform{OS: "linux", Architecture: goruntime.GOARCH}}, nil
}

// StopSandbox destroys the VM; containers in it exit with it.
func (s *Service) StopSandbox(ctx context.Context, r *sandboxAPI.StopSandboxRequest) (_ *sandboxAPI.StopSandboxResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.check(r.SandboxID); err != nil {
		return nil, err
	}
	timeout := stopTimeout
	if r.TimeoutSecs > 0 {
		timeout = time.Duration(r.TimeoutSecs) * time.Second
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.pod.Stop(sctx); err != nil {
		return nil, err
	}
	return &sandboxAPI.StopSandboxResponse{}, nil
}

// WaitSandbox blocks until the VM is gone.
func (s *Service) WaitSandbox(ctx context.Context, r *sandboxAPI.WaitSandboxRequest) (_ *sandboxAPI.WaitSandboxResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.check(r.SandboxID); err != nil {
		return nil, err
	}
	st, err := s.pod.Wait(ctx)
	if err != nil {
		return nil, err
	}
	return &sandboxAPI.WaitSandboxResponse{
		ExitStatus: uint32(st.Code),
		ExitedAt:   protobuf.ToTimestamp(st.ExitedAt),
	}, nil
}

// SandboxStatus reports the pod's state; verbose adds VM details.
func (s *Service) SandboxStatus(ctx context.Context, r *sandboxAPI.SandboxStatusRequest) (_ *sandboxAPI.SandboxStatusResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.check(r.SandboxID); err != nil {
		return nil, err
	}
	resp := &sandboxAPI.SandboxStatusResponse{
		SandboxID: r.SandboxID,
		Pid:       s.pod.VMMPid(),
		State:     stateNotReady,
		CreatedAt: protobuf.ToTimestamp(s.pod.CreatedAt()),
	}
	if s.pod.State() == pod.Ready {
		resp.State = stateReady
	}
	if st, ok := s.pod.Exit(); ok {
		resp.ExitedAt = protobuf.ToTimestamp(st.ExitedAt)
	}
	if r.Verbose {
		info := s.pod.Info()
		resp.Info = map[string]string{
			"state":       s.pod.State().String(),
			"vmm_pid":     strconv.Itoa(info.PID),
			"accel":       info.Accel,
			"console_log": info.ConsoleLog,
			"state_dir":   info.StateDir,
		}
		if st, ok := s.pod.Exit(); ok {
			resp.Info["exit_reason"] = st.Reason
		}
	}
	return resp, nil
}

// PingSandbox succeeds while the VM is up.
func (s *Service) PingSandbox(ctx context.Context, r *sandboxAPI.PingRequest) (_ *sandboxAPI.PingResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.check(r.SandboxID); err != nil {
		return nil, err
	}
	if _, err := s.pod.Sandbox(); err != nil {
		return nil, err
	}
	return &sandboxAPI.PingResponse{}, nil
}

// ShutdownSandbox destroys the VM if needed and ends the shim.
func (s *Service) ShutdownSandbox(ctx context.Context, r *sandboxAPI.ShutdownSandboxRequest) (_ *sandboxAPI.ShutdownSandboxResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.check(r.SandboxID); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	if err := s.pod.Stop(sctx); err != nil {
		log.G(ctx).WithError(err).Warn("stopping the pod VM at sandbox shutdown")
	}
	// The shim exits as soon as shutdown starts, and ttrpc writes this
	// answer only after we return: containerd reports an unanswered
	// ShutdownSandbox as a failed RemovePodSandbox. Give the answer time to
	// leave first.
	time.AfterFunc(shutdownGrace, s.sd.Shutdown)
	return &sandboxAPI.ShutdownSandboxResponse{}, nil
}

// SandboxMetrics is not offered: per-container statistics come from the
// task API's Stats, which the guest answers from its cgroups.
func (s *Service) SandboxMetrics(ctx context.Context, r *sandboxAPI.SandboxMetricsRequest) (_ *sandboxAPI.SandboxMetricsResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if err := s.check(r.SandboxID); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("sandbox metrics: use the task API's Stats per container: %w", errdefs.ErrNotImplemented)
}

func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToGRPC(err)
}

// sandboxDNS copies CRI's dns_config for the sandbox, which provides the
// pod's resolv.conf under the sandbox API.
func sandboxDNS(d *options.DNSConfig) *sandbox.DNSConfig {
	if d == nil {
		return nil
	}
	return &sandbox.DNSConfig{Servers: d.Servers, Searches: d.Searches, Options: d.Options}
}
