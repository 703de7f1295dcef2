package network

import (
	"net"
	"net/netip"
	"testing"
)

func TestProtoAndNICs(t *testing.T) {
	if (*Pod)(nil).Proto() != nil || (*Pod)(nil).NICs() != nil {
		t.Fatal("a pod without a namespace has no network")
	}
	if n := (&Pod{}).Proto(); n == nil || len(n.Interfaces) != 0 {
		t.Fatalf("a namespace with lo only: %v, want an empty network", n)
	}
	mac := net.HardwareAddr{0x0a, 0x58, 0, 0, 0, 5}
	p := &Pod{
		Interfaces: []Interface{{Name: "eth0", MAC: mac, MTU: 1450, Addrs: []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24")}}},
		Routes:     []Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.1.0.1"), Dev: "eth0"}},
		Neighbors:  []Neighbor{{IP: netip.MustParseAddr("10.1.0.9"), MAC: mac, Dev: "eth0"}},
	}
	n := p.Proto()
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	itf := n.Interfaces[0]
	if itf.Mac != "0a:58:00:00:00:05" || itf.Mtu != 1450 || itf.Addresses[0] != "10.1.0.5/24" ||
		n.Routes[0].Gateway != "10.1.0.1" || n.Routes[0].Source != "" || n.Neighbors[0].Ip != "10.1.0.9" {
		t.Errorf("proto = %v", n)
	}
	nics := p.NICs()
	if len(nics) != 1 || nics[0].ID != "net0" || nics[0].MTU != 1450 || nics[0].MAC.String() != mac.String() {
		t.Errorf("nics = %+v", nics)
	}
}
