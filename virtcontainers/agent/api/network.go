package api

import (
	"fmt"
	"net"
	"net/netip"
)

// Bounds of a PodNetwork. The VM gets one PCI NIC per interface.
const (
	MaxInterfaces     = 8
	MaxAddresses      = 16 // per interface
	MaxRoutes         = 64
	MaxNeighbors      = 64
	MaxInterfaceName  = 15 // IFNAMSIZ - 1
	minMTU, maxMTU    = 68, 65535
	minIPv6MTU        = 1280
	linkLocalV6Prefix = "fe80::/10"
)

// ParseMAC parses a unicast 6-byte MAC address.
func ParseMAC(field, s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, invalid(field, "%q is not a 6-byte MAC address", s)
	}
	if mac[0]&1 != 0 {
		return nil, invalid(field, "%q is a multicast address", s)
	}
	return mac, nil
}

// isIfName reports whether s can name a Linux network interface.
func isIfName(s string) bool {
	return len(s) >= 1 && len(s) <= MaxInterfaceName && s != "." && s != ".." && only(s, "_.-@+")
}

// unicastAddr: an address a pod interface may hold or route through.
func unicastAddr(a netip.Addr) bool {
	return a.IsValid() && !a.Is4In6() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast()
}

// Validate checks a PodNetwork as a whole: every name, address and route,
// and that every gateway and neighbour is on a link of the pod's own
// interfaces (inside one of its address prefixes or on-link routes).
func (n *PodNetwork) Validate() error {
	ifs := n.GetInterfaces()
	if len(ifs) > MaxInterfaces {
		return invalid("network.interfaces", "%d interfaces, at most %d", len(ifs), MaxInterfaces)
	}
	// Prefixes reachable on each interface without a gateway.
	onLink := map[string][]netip.Prefix{}
	macs, addrs := map[string]bool{}, map[netip.Addr]bool{}
	for i, itf := range ifs {
		field := fmt.Sprintf("network.interfaces[%d]", i)
		name := itf.GetName()
		if !isIfName(name) || name == "lo" {
			return invalid(field+".name", "%q is not an interface name (1-%d of [a-zA-Z0-9_.@+-], not lo)", name, MaxInterfaceName)
		}
		if _, dup := onLink[name]; dup {
			return invalid(field+".name", "%q given twice", name)
		}
		onLink[name] = []netip.Prefix{}
		mac, err := ParseMAC(field+".mac", itf.GetMac())
		if err != nil {
			return err
		}
		if macs[mac.String()] {
			return invalid(field+".mac", "%s given twice", mac)
		}
		macs[mac.String()] = true
		if m := itf.GetMtu(); m != 0 && (m < minMTU || m > maxMTU) {
			return invalid(field+".mtu", "%d is out of range (%d-%d)", m, minMTU, maxMTU)
		}
		if len(itf.GetAddresses()) > MaxAddresses {
			return invalid(field+".addresses", "%d addresses, at most %d", len(itf.GetAddresses()), MaxAddresses)
		}
		for j, s := range itf.GetAddresses() {
			af := fmt.Sprintf("%s.addresses[%d]", field, j)
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return invalid(af, "%q is not an address with a prefix length (10.0.0.5/24, fd00::5/64)", s)
			}
			a := p.Addr()
			if !unicastAddr(a) || a.Is6() && a.IsLinkLocalUnicast() {
				return invalid(af, "%s is not a unicast address a pod may hold (the guest makes its own link-local ones)", a)
			}
			if p.Bits() == 0 {
				return invalid(af, "prefix length /0 would put the whole address space on the link")
			}
			if a.Is6() && itf.GetMtu() != 0 && itf.GetMtu() < minIPv6MTU {
				return invalid(field+".mtu", "%d is below IPv6's minimum %d, and the interface has %s", itf.GetMtu(), minIPv6MTU, s)
			}
			if addrs[a] {
				return invalid(af, "%s given twice", a)
			}
			addrs[a] = true
			onLink[name] = append(onLink[name], p.Masked())
		}
	}
	reachable := func(name string, a netip.Addr) bool {
		if a.Is6() && netip.MustParsePrefix(linkLocalV6Prefix).Contains(a) {
			return true
		}
		for _, p := range onLink[name] {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	routes := n.GetRoutes()
	if len(routes) > MaxRoutes {
		return invalid("network.routes", "%d routes, at most %d", len(routes), MaxRoutes)
	}
	parsed := make([]netip.Prefix, len(routes))
	// Gateway-less routes first: a gateway may be reached through one.
	for i, r := range routes {
		field := fmt.Sprintf("network.routes[%d]", i)
		dst, err := netip.ParsePrefix(r.GetDestination())
		if err != nil || !unicastAddr(dst.Addr()) && !dst.Addr().IsUnspecified() {
			return invalid(field+".destination", "%q is not a destination prefix (0.0.0.0/0, 10.96.0.0/12)", r.GetDestination())
		}
		if dst.Masked() != dst {
			return invalid(field+".destination", "%s has bits set beyond its prefix length (want %s)", dst, dst.Masked())
		}
		if _, ok := onLink[r.GetInterface()]; !ok {
			return invalid(field+".interface", "%q is not one of network.interfaces", r.GetInterface())
		}
		if r.GetGateway() == "" {
			if dst.Bits() == 0 {
				return invalid(field+".gateway", "a default route needs a gateway")
			}
			onLink[r.GetInterface()] = append(onLink[r.GetInterface()], dst)
		}
		parsed[i] = dst
	}
	for i, r := range routes {
		field := fmt.Sprintf("network.routes[%d]", i)
		if g := r.GetGateway(); g != "" {
			gw, err := netip.ParseAddr(g)
			if err != nil || !unicastAddr(gw) {
				return invalid(field+".gateway", "%q is not a unicast address", g)
			}
			if gw.Is4() != parsed[i].Addr().Is4() {
				return invalid(field+".gateway", "%s is not of the destination's address family (%s)", gw, parsed[i])
			}
			if !reachable(r.GetInterface(), gw) {
				return invalid(field+".gateway", "%s is not on a link of interface %q (outside its addresses' prefixes and on-link routes)", gw, r.GetInterface())
			}
		}
		if s := r.GetSource(); s != "" {
			src, err := netip.ParseAddr(s)
			if err != nil || !addrs[src] {
				return invalid(field+".source", "%q is not one of the pod's addresses", s)
			}
		}
	}
	neigh := n.GetNeighbors()
	if len(neigh) > MaxNeighbors {
		return invalid("network.neighbors", "%d entries, at most %d", len(neigh), MaxNeighbors)
	}
	for i, nb := range neigh {
		field := fmt.Sprintf("network.neighbors[%d]", i)
		if _, ok := onLink[nb.GetInterface()]; !ok {
			return invalid(field+".interface", "%q is not one of network.interfaces", nb.GetInterface())
		}
		ip, err := netip.ParseAddr(nb.GetIp())
		if err != nil || !unicastAddr(ip) {
			return invalid(field+".ip", "%q is not a unicast address", nb.GetIp())
		}
		if !reachable(nb.GetInterface(), ip) {
			return invalid(field+".ip", "%s is not on a link of interface %q", ip, nb.GetInterface())
		}
		if _, err := ParseMAC(field+".mac", nb.GetMac()); err != nil {
			return err
		}
	}
	return nil
}
