package network

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// inNewNetNS runs fn on a thread in a new, empty network namespace (the
// guest's situation: lo down, NICs with kernel names). The thread is
// never unlocked, so it ends with its goroutine and the namespace with it.
func inNewNetNS(t *testing.T, fn func() error) error {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}

// nics adds links standing for virtio NICs, named the way the
// guest kernel would name them, eth0 holding the MAC the pod calls eth1.
func nics() error {
	for name, mac := range map[string]string{"eth0": "0a:00:00:00:00:02", "eth1": "0a:00:00:00:00:01"} {
		hw, _ := net.ParseMAC(mac)
		// veth: the test kernel may lack dummy; the peers stay unused.
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: hw}, PeerName: "peer-" + name}); err != nil {
			return err
		}
	}
	return nil
}

func podNetwork() *api.PodNetwork {
	return &api.PodNetwork{
		Interfaces: []*api.NetworkInterface{
			{Name: "eth0", Mac: "0a:00:00:00:00:01", Mtu: 1450, Addresses: []string{"10.252.9.5/24", "fd00:9::5/64"}},
			{Name: "eth1", Mac: "0a:00:00:00:00:02", Addresses: []string{"10.253.9.5/24"}},
		},
		Routes: []*api.NetworkRoute{
			{Destination: "0.0.0.0/0", Gateway: "169.254.1.1", Interface: "eth0"},
			{Destination: "169.254.1.1/32", Interface: "eth0"},
			{Destination: "10.96.0.0/12", Gateway: "10.253.9.1", Interface: "eth1", Metric: 7},
		},
		Neighbors: []*api.NetworkNeighbor{{Ip: "169.254.1.1", Mac: "ee:ee:ee:ee:ee:ee", Interface: "eth0"}},
	}
}

func TestConfigure(t *testing.T) {
	var got []string
	err := inNewNetNS(t, func() error {
		if err := nics(); err != nil {
			return err
		}
		if err := Configure(context.Background(), podNetwork()); err != nil {
			return err
		}
		for _, name := range []string{"lo", "eth0", "eth1"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			a := l.Attrs()
			got = append(got, name+" "+a.HardwareAddr.String()+" mtu="+itoa(a.MTU)+" up="+itoa(int(a.Flags&net.FlagUp)))
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
			for _, ad := range addrs {
				if ad.Scope == unix.RT_SCOPE_UNIVERSE {
					got = append(got, name+" addr "+ad.IPNet.String())
				}
			}
		}
		routes, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Gw != nil {
				dst := "default"
				if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" {
					dst = r.Dst.String()
				}
				got = append(got, "route "+dst+" via "+r.Gw.String()+" metric "+itoa(r.Priority))
			}
		}
		l, _ := netlink.LinkByName("eth0")
		neigh, _ := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		for _, n := range neigh {
			got = append(got, "neigh "+n.IP.String()+" "+n.HardwareAddr.String()+" permanent="+itoa(n.State&netlink.NUD_PERMANENT))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"lo  mtu=65536 up=1",
		"eth0 0a:00:00:00:00:01 mtu=1450 up=1", "eth0 addr 10.252.9.5/24", "eth0 addr fd00:9::5/64",
		"eth1 0a:00:00:00:00:02 mtu=1500 up=1", "eth1 addr 10.253.9.5/24",
		"route default via 169.254.1.1 metric 0", "route 10.96.0.0/12 via 10.253.9.1 metric 7",
		"neigh 169.254.1.1 ee:ee:ee:ee:ee:ee permanent=128",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q in:\n%s", want, all)
		}
	}
}

func TestConfigureRefuses(t *testing.T) {
	err := inNewNetNS(t, func() error {
		if err := nics(); err != nil {
			return err
		}
		n := podNetwork()
		n.Routes[0].Gateway = "192.168.1.1"
		if err := Configure(context.Background(), n); err == nil || !strings.HasPrefix(err.Error(), "network.routes[0].gateway") {
			t.Errorf("unreachable gateway: err = %v", err)
		}
		// Nothing changed: the check comes first.
		if l, err := netlink.LinkByName("eth0"); err != nil || l.Attrs().HardwareAddr.String() != "0a:00:00:00:00:02" {
			t.Errorf("eth0 changed by a refused request: %v %v", l, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestConfigureMissingNIC(t *testing.T) {
	err := inNewNetNS(t, func() error {
		n := &api.PodNetwork{Interfaces: []*api.NetworkInterface{{Name: "eth0", Mac: "0a:00:00:00:00:09"}}}
		ctx, cancel := context.WithTimeout(context.Background(), 200e6)
		defer cancel()
		return Configure(ctx, n)
	})
	if err == nil || !strings.Contains(err.Error(), "network.interfaces[0].mac") || !strings.Contains(err.Error(), "0a:00:00:00:00:09") {
		t.Fatalf("err = %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestStartWait(t *testing.T) {
	if err := (*Setup)(nil).Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := podNetwork()
	n.Routes[0].Gateway = "192.168.1.1"
	if _, err := Start(context.Background(), n); err == nil || !strings.HasPrefix(err.Error(), "network.routes[0].gateway") {
		t.Fatalf("a bad network must be refused at once: %v", err)
	}
	s := &Setup{done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Wait(ctx); err == nil {
		t.Fatal("Wait returned before the network was configured")
	}
	s.err = errors.New("network.interfaces[0].mac: no NIC")
	close(s.done)
	if err := s.Wait(context.Background()); err != s.err {
		t.Fatalf("Wait = %v, want the configuration's error", err)
	}
}
