// Package network carries a pod's CNI network into its VM. In the pod's
// network namespace on the host, every interface the CNI plugin made gets a
// tap device, and tc ingress redirects (mirred) move every frame between the
// two unchanged, so the VM's NIC (same MAC as the veth) is on the pod's
// network as the veth was. The host stack of the namespace takes no part,
// which works with any CNI plugin. What the namespace holds (addresses,
// routes, static neighbours) is read for the guest to configure.
package network

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Plumber connects a pod's network namespace to its VM.
//
// Lifecycle: Setup once before the VM starts → the VMM gets Pod's taps →
// Pod.Close → Teardown when the pod goes (also from `delete` after a shim
// crash: it needs nothing but the path).
type Plumber interface {
	// Setup makes the taps and redirects in the namespace at nsPath and
	// reads its configuration. On error nothing it made is left.
	Setup(ctx context.Context, nsPath string) (*Pod, error)
	// Teardown removes every tap and redirect Setup made there (and the
	// port-forward rule of LoopbackForwarding). A namespace
	// that is gone (or was never made) is not an error.
	Teardown(ctx context.Context, nsPath string) error
}

// Pod is a pod's network as Setup found and wired it.
type Pod struct {
	Interfaces []Interface
	Routes     []Route
	Neighbors  []Neighbor
}

// Interface is one CNI interface and the tap that carries it to the VM.
type Interface struct {
	Name  string           // in the namespace (eth0); the guest uses it too
	MAC   net.HardwareAddr // the veth's; the VM NIC takes it
	MTU   int
	Addrs []netip.Prefix // global addresses with their prefix length
	Tap   string         // tap device name in the namespace
	// TapFile is the open tap queue the VMM inherits. The tap is not
	// persistent: it goes when the last holder (the VMM) closes it.
	TapFile *os.File
}

// Route is a route of the namespace's main table through a pod interface,
// other than the connected subnets that addresses imply.
type Route struct {
	Dst     netip.Prefix
	Gateway netip.Addr // invalid: on-link
	Dev     string
	Src     netip.Addr // invalid: none
	Metric  int
}

// Neighbor is a static (permanent) neighbour entry of a pod interface.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
	Dev string
}

// Close closes the tap files (once the VMM holds its copies).
func (p *Pod) Close() {
	if p == nil {
		return
	}
	for i := range p.Interfaces {
		if f := p.Interfaces[i].TapFile; f != nil {
			f.Close()
			p.Interfaces[i].TapFile = nil
		}
	}
}

// NICs are the VM's network devices, one per interface.
func (p *Pod) NICs() []hypervisor.NIC {
	if p == nil {
		return nil
	}
	out := make([]hypervisor.NIC, len(p.Interfaces))
	for i, itf := range p.Interfaces {
		out[i] = hypervisor.NIC{ID: nicID(i), Tap: itf.TapFile, MAC: itf.MAC, MTU: itf.MTU}
	}
	return out
}

func nicID(i int) string { return "net" + strconv.Itoa(i) }

// Proto is the guest's view of the network (SetupSandboxRequest.network):
// nil for a pod without a network namespace, empty (loopback only) for one
// whose namespace has no other interface.
func (p *Pod) Proto() *api.PodNetwork {
	if p == nil {
		return nil
	}
	n := &api.PodNetwork{}
	for _, itf := range p.Interfaces {
		pi := &api.NetworkInterface{Name: itf.Name, Mac: itf.MAC.String(), Mtu: uint32(itf.MTU)}
		for _, a := range itf.Addrs {
			pi.Addresses = append(pi.Addresses, a.String())
		}
		n.Interfaces = append(n.Interfaces, pi)
	}
	for _, r := range p.Routes {
		pr := &api.NetworkRoute{Destination: r.Dst.String(), Interface: r.Dev, Metric: uint32(r.Metric)}
		if r.Gateway.IsValid() {
			pr.Gateway = r.Gateway.String()
		}
		if r.Src.IsValid() {
			pr.Source = r.Src.String()
		}
		n.Routes = append(n.Routes, pr)
	}
	for _, nb := range p.Neighbors {
		n.Neighbors = append(n.Neighbors, &api.NetworkNeighbor{Ip: nb.IP.String(), Mac: nb.MAC.String(), Interface: nb.Dev})
	}
	return n
}
