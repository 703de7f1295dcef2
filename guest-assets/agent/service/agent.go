package service

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/guest-assets/agent/container"
	"github.com/coco-runtime/coco/guest-assets/agent/events"
	"github.com/coco-runtime/coco/guest-assets/agent/network"
	"github.com/coco-runtime/coco/guest-assets/agent/policy"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Guest is what SetupSandbox changes in the VM. The real one writes the
// kernel and files; unit tests record the calls.
type Guest interface {
	SetHostname(name string) error
	WriteResolvConf(content string) error
	SetSysctl(key, value string) error
	SetClock(t time.Time) error
}

// PolicyCompiler turns policy text into a Policy (the Rego engine).
type PolicyCompiler func(text string) (policy.Policy, error)

// agentService implements coco.agent.v1.Agent.
type agentService struct {
	version    string
	startNs    uint64
	clock      *bootClock
	now        func() uint64
	gate       *policy.Gate
	queue      *events.Queue
	reader     events.Reader
	guest      Guest
	compile    PolicyCompiler
	owner      *owner // nil: the guest has no init-data
	tee        bool
	destroy    func(reason string)
	containers *container.Manager
	setupMu    sync.Mutex
	setupFor   string
	podNet     atomic.Pointer[network.Setup] // nil: no pod network
}

const eventsMethod = "/coco.agent.v1.Agent/Events"

func (s *agentService) Health(ctx context.Context, _ *api.HealthRequest) (*api.HealthResponse, error) {
	return &api.HealthResponse{
		Version:        s.version,
		AgentStartNs:   s.startNs,
		AgentReadyNs:   s.clock.ready.Load(),
		SandboxReady:   s.gate.Ready(),
		NowNs:          s.nowNs(),
		AnnouncedNs:    s.clock.announced.Load(),
		FirstRequestNs: s.clock.firstRequest.Load(),
		FirstReplyNs:   s.clock.firstReply.Load(),
	}, nil
}

func (s *agentService) nowNs() uint64 {
	if s.now == nil {
		return 0
	}
	return s.now()
}

func (s *agentService) SetupSandbox(ctx context.Context, r *api.SetupSandboxRequest) (*emptypb.Empty, error) {
	s.setupMu.Lock()
	defer s.setupMu.Unlock()
	if s.setupFor != "" {
		return nil, fmt.Errorf("sandbox %s is already set up: %w", s.setupFor, errdefs.ErrAlreadyExists)
	}
	// Everything is checked before anything changes. The owner's policy
	// from init-data is already in force (the gate waited for it), and it
	// allowed this request.
	for k := range r.GetSysctls() {
		if err := checkSysctl(k); err != nil {
			return nil, err
		}
	}
	if err := s.applyHostPolicy(ctx, r.GetPolicy()); err != nil {
		return nil, err
	}
	if t := r.GetHostTime(); t != nil && t.IsValid() {
		if err := s.guest.SetClock(t.AsTime()); err != nil {
			log.G(ctx).WithError(err).Warn("set guest clock")
		}
	}
	if h := r.GetHostname(); h != "" {
		if err := s.guest.SetHostname(h); err != nil {
			return nil, fmt.Errorf("hostname: %w", err)
		}
	}
	if r.GetDns() != "" {
		if err := s.guest.WriteResolvConf(r.GetDns()); err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
	}
	for k, v := range r.GetSysctls() {
		if err := s.guest.SetSysctl(k, v); err != nil {
			return nil, fmt.Errorf("sysctls[%s]: %v: %w", k, err, errdefs.ErrInvalidArgument)
		}
	}
	if n := r.GetNetwork(); n != nil {
		// Configured in the background; containers wait for it.
		pn, err := network.Start(ctx, n)
		if err != nil {
			return nil, err
		}
		s.podNet.Store(pn)
	}
	if r.GetVmNamespaces() {
		s.containers.UseVMNamespaces(r.GetSandboxId())
	}
	s.setupFor = r.GetSandboxId()
	s.gate.SetReady()
	log.G(ctx).WithField("sandbox", s.setupFor).Info("sandbox set up")
	return &emptypb.Empty{}, nil
}

// applyHostPolicy puts the policy the host sent with SetupSandbox in force.
// The owner's init-data policy wins over it. In a TEE guest the host's
// policy must also pass the policy in force as a SetPolicy request: the
// default TEE policy refuses it, and an owner can allow an exact one.
func (s *agentService) applyHostPolicy(ctx context.Context, text string) error {
	if text == "" {
		return nil
	}
	if s.tee {
		if err := s.gate.Judge(ctx, setPolicyMethod, &api.SetPolicyRequest{Policy: text}); err != nil {
			return fmt.Errorf("policy: a confidential guest takes its policy from the owner's init-data (policy.rego), not from the host "+
				"(remove the pod's io.katacontainers.config.agent.policy annotation or the runtime class's agent.policy): %w", err)
		}
	} else if s.owner.ownerPolicy() {
		log.G(ctx).Warn("ignoring the host's policy: init-data carries policy.rego")
		return nil
	}
	p, err := compilePolicy(s.compile, text)
	if err != nil {
		return err
	}
	s.gate.SetPolicy(p)
	return nil
}

const setPolicyMethod = "/coco.agent.v1.Agent/SetPolicy"

func compilePolicy(compile PolicyCompiler, text string) (policy.Policy, error) {
	if compile == nil {
		return nil, fmt.Errorf("policy: this guest has no policy engine built in; send no policy text: %w", errdefs.ErrNotImplemented)
	}
	p, err := compile(text)
	if errdefs.IsUnavailable(err) {
		// The engine, not the policy, failed (coco-policy missing or dead).
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("policy: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

func (s *agentService) PrepareContainer(ctx context.Context, r *api.PrepareContainerRequest) (*api.PrepareContainerResponse, error) {
	if err := s.podNet.Load().Wait(ctx); err != nil {
		return nil, err
	}
	b, err := s.containers.Prepare(ctx, r)
	if err != nil {
		return nil, err
	}
	return &api.PrepareContainerResponse{Bundle: b}, nil
}

// Events sends task events in order until the host goes away or a newer
// Events stream takes over. A stream opened before SetupSandbox waits for
// it (nothing is sent, and the policy is asked only once it is loaded), so
// the host may subscribe first and miss nothing. ttrpc 1.2 has no stream
// interceptor, so the gate is run here.
func (s *agentService) Events(ctx context.Context, r *api.EventsRequest, srv api.Agent_EventsServer) error {
	if err := s.gate.WaitReady(ctx); err != nil {
		return errgrpc.ToGRPC(err)
	}
	if err := s.gate.Check(ctx, eventsMethod, r); err != nil {
		return errgrpc.ToGRPC(err)
	}
	ctx, release := s.reader.Acquire(ctx)
	defer release()
	if err := s.queue.Drain(ctx, srv.Send); err != nil {
		return errgrpc.ToGRPC(err)
	}
	return nil
}

// SetPolicy replaces the policy; the policy in force judged the request (the
// default TEE policy refuses every one).
func (s *agentService) SetPolicy(ctx context.Context, r *api.SetPolicyRequest) (*emptypb.Empty, error) {
	p, err := compilePolicy(s.compile, r.GetPolicy())
	if err != nil {
		return nil, err
	}
	s.gate.SetPolicy(p)
	return &emptypb.Empty{}, nil
}

func (s *agentService) DestroySandbox(ctx context.Context, _ *api.DestroySandboxRequest) (*emptypb.Empty, error) {
	log.G(ctx).Info("DestroySandbox: powering off")
	// After the answer is on its way: the server drains, then the VM stops.
	go s.destroy("sandbox destroyed by the host")
	return &emptypb.Empty{}, nil
}

// UpdateVolume applies a new version of a container's file volume (the
// policy judged it as UpdateVolumeRequest; Validate bounded it).
func (s *agentService) UpdateVolume(ctx context.Context, r *api.UpdateVolumeRequest) (*emptypb.Empty, error) {
	if err := s.containers.UpdateVolume(ctx, r); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// ReadTerminationMessage returns a container's termination message (the
// policy judged it as ReadTerminationMessageRequest).
func (s *agentService) ReadTerminationMessage(ctx context.Context, r *api.ReadTerminationMessageRequest) (*api.ReadTerminationMessageResponse, error) {
	b, err := s.containers.ReadTerminationMessage(r.GetContainerId(), r.GetDestination())
	if err != nil {
		return nil, err
	}
	return &api.ReadTerminationMessageResponse{Content: b}, nil
}
