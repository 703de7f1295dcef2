package sandbox

import (
	"context"
	"fmt"
	"net"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/sandbox/network"
	"github.com/coco-runtime/coco/virtcontainers/agent"
)

// hostNetwork reports whether the pod asks for the node's network
// namespace: under containerd's sandbox API CRI gives every other pod a
// namespace path; otherwise the sandbox spec lists no network namespace.
// (A spec with a network namespace but no path, as `ctr run` makes, is a
// pod without a network, not a host-network one.)
func hostNetwork(opts Options) bool {
	if opts.NetNSPath != "" {
		return false
	}
	if opts.SandboxAPI {
		return true
	}
	sp := opts.Spec
	if sp == nil || sp.Linux == nil {
		return false
	}
	for _, ns := range sp.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return false
		}
	}
	return true
}

// checkHostNetwork refuses hostNetwork pods: a VM cannot share the node's
// network stack, and a pod that expects the node's interfaces and ports
// would silently get none.
func checkHostNetwork(opts Options) error {
	if hostNetwork(opts) {
		return fmt.Errorf("sandbox %s: hostNetwork pods cannot run in a VM (the pod would not be on the node's network, and the node's network must not reach into a confidential guest); use a runc runtime class for it: %w", opts.ID, errdefs.ErrInvalidArgument)
	}
	return nil
}

// plumbNetwork wires the pod's network namespace to taps and attaches a
// NIC per interface to the VM, which must not have started. The caller
// closes the returned Pod's taps once the VMM holds its own copies; the
// sandbox's teardown removes what is left in the namespace.
func (s *vmSandbox) plumbNetwork(ctx context.Context) (*network.Pod, error) {
	if s.opts.NetNSPath == "" || s.plumber == nil || s.opts.Config.Network.Interfaces == "none" {
		return nil, nil
	}
	pod, err := s.plumber.Setup(ctx, s.opts.NetNSPath)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", s.opts.ID, err)
	}
	if len(pod.Interfaces) == 0 {
		return pod, nil
	}
	att, ok := s.vm.(hypervisor.NICAttacher)
	if !ok {
		pod.Close()
		return nil, fmt.Errorf("sandbox %s: hypervisor %q cannot attach network interfaces: %w", s.opts.ID, s.vmConfig.Driver, errdefs.ErrNotImplemented)
	}
	if err := att.AttachNICs(pod.NICs()); err != nil {
		pod.Close()
		return nil, fmt.Errorf("sandbox %s: %w", s.opts.ID, err)
	}
	return pod, nil
}

// unplumbNetwork removes the taps and redirects from the pod's namespace.
func (s *vmSandbox) unplumbNetwork(ctx context.Context) error {
	if s.opts.NetNSPath == "" || s.plumber == nil {
		return nil
	}
	return s.plumber.Teardown(ctx, s.opts.NetNSPath)
}

// portForwarder is what the shim needs of an agent client for port-forward.
type portForwarder interface {
	OpenPortForward(ctx context.Context, port uint16) (net.Conn, error)
}

// forwardLoopback gives the pod namespace's loopback to the guest, so that
// containerd's CRI port-forward (which dials localhost:<port> in that
// namespace) reaches what the guest serves on <port>. A plumber or agent
// without the capability, or a kernel without nf_tables NAT, costs the pod
// port-forward only: it is logged, not fatal.
func (s *vmSandbox) forwardLoopback(ctx context.Context) {
	lf, ok := s.plumber.(network.LoopbackForwarding)
	if s.opts.NetNSPath == "" || !ok {
		return
	}
	open := func(ctx context.Context, port uint16) (net.Conn, error) {
		c, err := s.client()
		if err != nil {
			return nil, err
		}
		pf, ok := c.(portForwarder)
		if !ok {
			return nil, fmt.Errorf("this agent client cannot port-forward: %w", errdefs.ErrNotImplemented)
		}
		return pf.OpenPortForward(ctx, port)
	}
	lctx := log.WithLogger(context.WithoutCancel(ctx), log.G(ctx).WithField("sandbox", s.opts.ID))
	f, err := lf.ForwardLoopback(lctx, s.opts.NetNSPath, open)
	if err != nil {
		log.G(ctx).WithError(err).WithField("sandbox", s.opts.ID).Warn("port-forward will not reach this pod")
		return
	}
	log.G(ctx).WithField("sandbox", s.opts.ID).Debugf("port-forward: loopback of %s goes to the shim's listener(s) on port(s) %v", s.opts.NetNSPath, f.Ports())
	s.mu.Lock()
	s.forwarder = f
	s.mu.Unlock()
}

// stopForwarding closes the port-forward listeners and live forwards; the
// namespace's rule goes with unplumbNetwork.
func (s *vmSandbox) stopForwarding() {
	s.mu.Lock()
	f := s.forwarder
	s.forwarder = nil
	s.mu.Unlock()
	f.Close()
}

var _ portForwarder = (*agent.Client)(nil)
