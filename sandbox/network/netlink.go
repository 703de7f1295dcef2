package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Netlink is the Plumber of real network namespaces.
type Netlink struct{}

var _ Plumber = Netlink{}

const (
	// tapPrefix names our taps in the pod's namespace (coco-tap0, ...);
	// Teardown finds them by it.
	tapPrefix = "coco-tap"
	// filterPrio marks our redirect filters, so that Teardown removes
	// them and nothing a CNI plugin put on the same ingress qdisc.
	filterPrio = 0xc0c0
)

var ingressParent = netlink.MakeHandle(0xffff, 0)

// inNetNS runs fn on an OS thread that is in the namespace at path. The
// thread is dropped, not reused, if it cannot return to its own namespace.
func inNetNS(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Still locked: the thread ends with this goroutine.
			done <- errors.Join(ferr, fmt.Errorf("leave network namespace %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// gone reports whether err says the namespace no longer exists: the path
// is missing, or no longer a namespace (unmounted, setns refuses it).
func gone(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL)
}

func (Netlink) Setup(ctx context.Context, nsPath string) (*Pod, error) {
	var pod *Pod
	err := inNetNS(nsPath, func() error {
		var err error
		pod, err = setup()
		if err != nil {
			pod.Close()
			pod = nil
			return errors.Join(err, teardown())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pod network in %s: %w", nsPath, err)
	}
	return pod, nil
}

func (Netlink) Teardown(ctx context.Context, nsPath string) error {
	if nsPath == "" {
		return nil
	}
	err := inNetNS(nsPath, teardown)
	if err != nil && gone(err) {
		return nil
	}
	// The port-forward redirect (ForwardLoopback): its listener went with
	// the shim, the rule stays with the namespace until removed here.
	err = errors.Join(err, removeLoopbackRedirect(nsPath))
	if err != nil {
		return fmt.Errorf("pod network teardown in %s: %w", nsPath, err)
	}
	return nil
}

// setup wires every interface of the current namespace but loopback (and
// taps) to a tap, then reads routes and neighbours. On error the caller
// closes what it returned and tears down.
func setup() (*Pod, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	pod := &Pod{}
	byIndex := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || l.Type() == "tuntap" {
			continue
		}
		// CNI plugins bring their interfaces up. Down ones are not the
		// pod's: e.g. the fallback tunnels (tunl0, sit0, gre0) that the
		// kernel puts in every namespace once their module is loaded,
		// which have no Ethernet address to give a NIC.
		if a.Flags&net.FlagUp == 0 {
			continue
		}
		if len(pod.Interfaces) == api.MaxInterfaces {
			return pod, fmt.Errorf("more than %d interfaces besides lo: %w", api.MaxInterfaces, errdefs.ErrInvalidArgument)
		}
		itf, err := wire(l, len(pod.Interfaces))
		if itf.TapFile != nil {
			pod.Interfaces = append(pod.Interfaces, itf)
		}
		if err != nil {
			return pod, fmt.Errorf("interface %s: %w", a.Name, err)
		}
		byIndex[a.Index] = a.Name
	}
	if pod.Routes, err = readRoutes(byIndex); err != nil {
		return pod, err
	}
	for idx, name := range byIndex {
		nb, err := readNeighbors(idx, name)
		if err != nil {
			return pod, err
		}
		pod.Neighbors = append(pod.Neighbors, nb...)
	}
	return pod, nil
}

// wire makes tap i for link l and the redirects both ways. The returned
// Interface holds the tap file whenever the tap exists, error or not.
func wire(l netlink.Link, i int) (Interface, error) {
	a := l.Attrs()
	itf := Interface{Name: a.Name, MAC: a.HardwareAddr, MTU: a.MTU, Tap: tapPrefix + strconv.Itoa(i)}
	if len(a.HardwareAddr) != 6 {
		return itf, fmt.Errorf("no Ethernet address (type %s): only Ethernet interfaces can be carried into the VM: %w", l.Type(), errdefs.ErrNotImplemented)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return itf, fmt.Errorf("addresses: %w", err)
	}
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok || ad.Scope != unix.RT_SCOPE_UNIVERSE {
			continue // link-local and host addresses: the guest makes its own
		}
		ip = ip.Unmap()
		ones, _ := ad.Mask.Size()
		itf.Addrs = append(itf.Addrs, netip.PrefixFrom(ip, ones))
	}
	// Not persistent: the tap goes with its last open file, so a VMM that
	// dies (or a shim that dies before the VMM starts) leaves no tap.
	tap := &netlink.Tuntap{
		LinkAttrs:  netlink.LinkAttrs{Name: itf.Tap},
		Mode:       netlink.TUNTAP_MODE_TAP,
		Flags:      netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		NonPersist: true,
		Queues:     1,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return itf, fmt.Errorf("create tap %s: %w", itf.Tap, err)
	}
	itf.TapFile = tap.Fds[0]
	if err := netlink.LinkSetMTU(tap, a.MTU); err != nil {
		return itf, fmt.Errorf("tap %s: mtu %d: %w", itf.Tap, a.MTU, err)
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return itf, fmt.Errorf("tap %s up: %w", itf.Tap, err)
	}
	if err := redirect(a.Index, tap.Index); err != nil {
		return itf, fmt.Errorf("redirect to %s: %w", itf.Tap, err)
	}
	if err := redirect(tap.Index, a.Index); err != nil {
		return itf, fmt.Errorf("redirect from %s: %w", itf.Tap, err)
	}
	return itf, nil
}

// redirect sends every frame arriving on link from out of link to, as is.
func redirect(from, to int) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: from, Handle: ingressParent, Parent: netlink.HANDLE_INGRESS}}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("ingress qdisc: %w", err)
	}
	// u32 with no key matches everything (the kernel here has no matchall).
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: from, Parent: ingressParent, Priority: filterPrio, Protocol: unix.ETH_P_ALL},
		Actions:     []netlink.Action{netlink.NewMirredAction(to)},
	}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("mirred filter: %w", err)
	}
	return nil
}

// teardown removes our taps, our filters, and ingress qdiscs left empty.
func teardown() error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "tuntap" && strings.HasPrefix(a.Name, tapPrefix) {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
				errs = append(errs, fmt.Errorf("delete tap %s: %w", a.Name, err))
			}
			continue
		}
		if err := unredirect(l); err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

func unredirect(l netlink.Link) error {
	filters, err := netlink.FilterList(l, ingressParent)
	if err != nil {
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
			return nil // no ingress qdisc
		}
		return fmt.Errorf("list ingress filters: %w", err)
	}
	if len(filters) == 0 {
		return nil
	}
	left := 0
	for _, f := range filters {
		if f.Attrs().Priority != filterPrio {
			left++
			continue
		}
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("delete redirect filter: %w", err)
		}
	}
	if left > 0 {
		return nil // someone else's filters remain: keep their qdisc
	}
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: ingressParent, Parent: netlink.HANDLE_INGRESS}}
	if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("delete ingress qdisc: %w", err)
	}
	return nil
}

// readRoutes lists the main table's routes through the pod's interfaces,
// leaving out what the kernel derives from addresses.
func readRoutes(byIndex map[int]string) ([]Route, error) {
	all, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	var out []Route
	for _, r := range all {
		if len(r.MultiPath) > 0 {
			for _, nh := range r.MultiPath {
				if _, ours := byIndex[nh.LinkIndex]; ours {
					return nil, fmt.Errorf("route to %v: multipath routes are not carried into the VM: %w", r.Dst, errdefs.ErrNotImplemented)
				}
			}
			continue
		}
		dev, ours := byIndex[r.LinkIndex]
		if !ours || r.Protocol == unix.RTPROT_KERNEL || r.Type != unix.RTN_UNICAST {
			continue
		}
		rt := Route{Dev: dev, Metric: r.Priority}
		if r.Dst != nil {
			ip, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			rt.Dst = netip.PrefixFrom(ip.Unmap(), ones)
		} else if r.Family == unix.AF_INET6 {
			rt.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		} else {
			rt.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
		if ip, ok := netip.AddrFromSlice(r.Gw); ok {
			rt.Gateway = ip.Unmap()
		}
		if ip, ok := netip.AddrFromSlice(r.Src); ok {
			rt.Src = ip.Unmap()
		}
		if rt.Dst.Addr().Is6() && rt.Dst.Addr().IsLinkLocalUnicast() {
			continue // fe80::/64: the guest's kernel has its own
		}
		out = append(out, rt)
	}
	return out, nil
}

// readNeighbors lists the static neighbour entries of one interface (the
// ones a CNI plugin set, such as a gateway that answers no ARP).
func readNeighbors(index int, dev string) ([]Neighbor, error) {
	list, err := netlink.NeighList(index, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("neighbours of %s: %w", dev, err)
	}
	var out []Neighbor
	for _, n := range list {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || n.State&netlink.NUD_PERMANENT == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		out = append(out, Neighbor{IP: ip.Unmap(), MAC: n.HardwareAddr, Dev: dev})
	}
	return out, nil
}
