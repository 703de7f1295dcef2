// Package network configures the guest's network from SetupSandbox: the
// pod's interfaces (found by MAC among the VM's NICs), their addresses and
// MTU, routes and static neighbours, and loopback. Containers share the
// VM's network namespace, so this is the pod's network.
package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// LinkWait bounds the wait for the NICs to appear: virtio_net may still be
// loading (the agent loads it at low priority while it serves).
const LinkWait = 20 * time.Second

// Setup is a pod network being configured in the background.
type Setup struct {
	done chan struct{}
	err  error
}

// Start validates n and configures it in the background: bringing NICs up
// (and, under TCG, waiting for virtio_net to load) takes a few hundred ms,
// which overlaps with the host preparing the first container instead of
// holding up SetupSandbox. Containers must Wait before they start.
func Start(ctx context.Context, n *api.PodNetwork) (*Setup, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	s := &Setup{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if s.err = Configure(context.WithoutCancel(ctx), n); s.err != nil {
			log.G(ctx).WithError(s.err).Error("network")
		}
	}()
	return s, nil
}

// Wait returns once the network is configured, with Configure's error.
// A nil Setup (a pod without a network) is ready.
func (s *Setup) Wait(ctx context.Context) error {
	if s == nil {
		return nil
	}
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the pod network: %w", ctx.Err())
	}
}

// LoopbackUp brings the guest's loopback interface up.
func LoopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("network: loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("network: loopback up: %w", err)
	}
	return nil
}

// Configure brings loopback up and applies n, which it validates first
// (an unset n leaves loopback only). The host's word is checked, not
// trusted: every name, address and route must pass api's checks, and
// every interface must be a NIC this VM really has.
func Configure(ctx context.Context, n *api.PodNetwork) error {
	if err := n.Validate(); err != nil {
		return err
	}
	if err := LoopbackUp(); err != nil {
		return err
	}
	if len(n.GetInterfaces()) == 0 {
		return nil
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, LinkWait)
	defer cancel()
	links, err := findLinks(wctx, n.GetInterfaces())
	if err != nil {
		return err
	}
	found := time.Since(start)
	defer func() {
		log.G(ctx).Debugf("network: %d interfaces configured in %s (%s waiting for the NICs)",
			len(links), time.Since(start).Round(time.Millisecond), found.Round(time.Millisecond))
	}()
	// Renamed in two steps, so that a NIC the kernel called eth1 can
	// become eth0 while another NIC still holds that name.
	for i, l := range links {
		if err := netlink.LinkSetDown(l); err != nil {
			return fmt.Errorf("network.interfaces[%d]: link down: %w", i, err)
		}
		if err := netlink.LinkSetName(l, "cocotmp"+strconv.Itoa(i)); err != nil {
			return fmt.Errorf("network.interfaces[%d]: rename: %w", i, err)
		}
	}
	for i, itf := range n.GetInterfaces() {
		if err := configureLink(links[i], itf); err != nil {
			return fmt.Errorf("network.interfaces[%d] (%s): %w", i, itf.GetName(), err)
		}
	}
	// On-link routes first: a gateway may be reachable only through one.
	for _, onLink := range []bool{true, false} {
		for i, r := range n.GetRoutes() {
			if (r.GetGateway() == "") != onLink {
				continue
			}
			if err := addRoute(r); err != nil {
				return fmt.Errorf("network.routes[%d] (%s): %w", i, r.GetDestination(), err)
			}
		}
	}
	for i, nb := range n.GetNeighbors() {
		if err := addNeighbor(nb); err != nil {
			return fmt.Errorf("network.neighbors[%d] (%s): %w", i, nb.GetIp(), err)
		}
	}
	return nil
}

// findLinks returns the VM's link for each interface, matched by MAC,
// waiting for NICs whose driver is not bound yet.
func findLinks(ctx context.Context, ifs []*api.NetworkInterface) ([]netlink.Link, error) {
	want := make([]net.HardwareAddr, len(ifs))
	for i, itf := range ifs {
		mac, err := api.ParseMAC(fmt.Sprintf("network.interfaces[%d].mac", i), itf.GetMac())
		if err != nil {
			return nil, err
		}
		want[i] = mac
	}
	start := time.Now()
	for {
		all, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("network: list links: %w", err)
		}
		found := make([]netlink.Link, len(ifs))
		missing := -1
		for i, mac := range want {
			for _, l := range all {
				if l.Attrs().HardwareAddr.String() == mac.String() && l.Attrs().Flags&net.FlagLoopback == 0 {
					found[i] = l
				}
			}
			if found[i] == nil && missing < 0 {
				missing = i
			}
		}
		if missing < 0 {
			return found, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("network.interfaces[%d].mac: the VM has no NIC with MAC %s (waited %s): %w",
				missing, want[missing], time.Since(start).Round(time.Millisecond), errdefs.ErrNotFound)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func configureLink(l netlink.Link, itf *api.NetworkInterface) error {
	if err := netlink.LinkSetName(l, itf.GetName()); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	if m := int(itf.GetMtu()); m != 0 {
		if err := netlink.LinkSetMTU(l, m); err != nil {
			return fmt.Errorf("mtu %d: %w", m, err)
		}
	}
	for _, s := range itf.GetAddresses() {
		p := netip.MustParsePrefix(s) // validated
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// The host's namespace already proved the address unique.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("address %s: %w", s, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("link up: %w", err)
	}
	return nil
}

func addRoute(r *api.NetworkRoute) error {
	l, err := netlink.LinkByName(r.GetInterface())
	if err != nil {
		return fmt.Errorf("interface %q: %w", r.GetInterface(), err)
	}
	dst := netip.MustParsePrefix(r.GetDestination()) // validated
	rt := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(dst), Priority: int(r.GetMetric())}
	if g := r.GetGateway(); g != "" {
		rt.Gw = net.IP(netip.MustParseAddr(g).AsSlice())
	} else {
		rt.Scope = netlink.SCOPE_LINK
	}
	if s := r.GetSource(); s != "" {
		rt.Src = net.IP(netip.MustParseAddr(s).AsSlice())
	}
	if err := netlink.RouteAdd(rt); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

func addNeighbor(nb *api.NetworkNeighbor) error {
	l, err := netlink.LinkByName(nb.GetInterface())
	if err != nil {
		return fmt.Errorf("interface %q: %w", nb.GetInterface(), err)
	}
	ip := netip.MustParseAddr(nb.GetIp())
	mac, _ := net.ParseMAC(nb.GetMac())
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	return netlink.NeighSet(&netlink.Neigh{
		LinkIndex: l.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
		IP: net.IP(ip.AsSlice()), HardwareAddr: mac,
	})
}

func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}
