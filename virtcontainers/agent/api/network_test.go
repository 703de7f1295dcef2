package api

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
)

// goodNetwork is what the CNI bridge plugin leaves: one veth with an
// address, and a default route through the bridge's address.
func goodNetwork() *PodNetwork {
	return &PodNetwork{
		Interfaces: []*NetworkInterface{{Name: "eth0", Mac: "0a:58:0a:fb:01:05", Mtu: 1500, Addresses: []string{"10.251.1.5/24", "fd00:1::5/64"}}},
		Routes: []*NetworkRoute{
			{Destination: "0.0.0.0/0", Gateway: "10.251.1.1", Interface: "eth0"},
			{Destination: "::/0", Gateway: "fe80::1", Interface: "eth0"},
			{Destination: "169.254.1.1/32", Interface: "eth0"},
			{Destination: "10.96.0.0/12", Gateway: "169.254.1.1", Interface: "eth0", Source: "10.251.1.5"},
		},
		Neighbors: []*NetworkNeighbor{{Ip: "169.254.1.1", Mac: "ee:ee:ee:ee:ee:ee", Interface: "eth0"}},
	}
}

func TestPodNetworkValidate(t *testing.T) {
	if err := goodNetwork().Validate(); err != nil {
		t.Fatalf("good network: %v", err)
	}
	if err := (*PodNetwork)(nil).Validate(); err != nil {
		t.Fatalf("no network: %v", err)
	}
	for _, tc := range []struct {
		field  string // the error must name it
		mutate func(n *PodNetwork)
	}{
		{"network.interfaces", func(n *PodNetwork) {
			for range MaxInterfaces {
				n.Interfaces = append(n.Interfaces, n.Interfaces[0])
			}
		}},
		{"network.interfaces[0].name", func(n *PodNetwork) { n.Interfaces[0].Name = "lo" }},
		{"network.interfaces[0].name", func(n *PodNetwork) { n.Interfaces[0].Name = "eth0/../x" }},
		{"network.interfaces[0].name", func(n *PodNetwork) { n.Interfaces[0].Name = "a-very-long-interface" }},
		{"network.interfaces[1].name", func(n *PodNetwork) {
			n.Interfaces = append(n.Interfaces, &NetworkInterface{Name: "eth0", Mac: "0a:00:00:00:00:01"})
		}},
		{"network.interfaces[1].mac", func(n *PodNetwork) {
			n.Interfaces = append(n.Interfaces, &NetworkInterface{Name: "eth1", Mac: "0A:58:0A:FB:01:05"})
		}},
		{"network.interfaces[0].mac", func(n *PodNetwork) { n.Interfaces[0].Mac = "01:00:5e:00:00:01" }},
		{"network.interfaces[0].mac", func(n *PodNetwork) { n.Interfaces[0].Mac = "00:11:22:33:44:55:66:77" }},
		{"network.interfaces[0].mtu", func(n *PodNetwork) { n.Interfaces[0].Mtu = 70000 }},
		{"network.interfaces[0].mtu", func(n *PodNetwork) { n.Interfaces[0].Mtu = 1200 }}, // has IPv6
		{"network.interfaces[0].addresses[0]", func(n *PodNetwork) { n.Interfaces[0].Addresses[0] = "10.251.1.5" }},
		{"network.interfaces[0].addresses[0]", func(n *PodNetwork) { n.Interfaces[0].Addresses[0] = "10.251.1.5/33" }},
		{"network.interfaces[0].addresses[0]", func(n *PodNetwork) { n.Interfaces[0].Addresses[0] = "10.251.1.5/0" }},
		{"network.interfaces[0].addresses[0]", func(n *PodNetwork) { n.Interfaces[0].Addresses[0] = "127.0.0.1/8" }},
		{"network.interfaces[0].addresses[0]", func(n *PodNetwork) { n.Interfaces[0].Addresses[0] = "224.0.0.1/4" }},
		{"network.interfaces[0].addresses[1]", func(n *PodNetwork) { n.Interfaces[0].Addresses[1] = "fe80::5/64" }},
		{"network.interfaces[0].addresses[1]", func(n *PodNetwork) { n.Interfaces[0].Addresses[1] = "10.251.1.5/16" }},
		{"network.routes[0].destination", func(n *PodNetwork) { n.Routes[0].Destination = "default" }},
		{"network.routes[0].destination", func(n *PodNetwork) { n.Routes[0].Destination = "10.0.0.1/8" }},
		{"network.routes[0].interface", func(n *PodNetwork) { n.Routes[0].Interface = "eth9" }},
		{"network.routes[0].gateway", func(n *PodNetwork) { n.Routes[0].Gateway = "192.168.0.1" }},
		{"network.routes[0].gateway", func(n *PodNetwork) { n.Routes[0].Gateway = "fd00:1::1" }},
		{"network.routes[0].gateway", func(n *PodNetwork) { n.Routes[0].Gateway = "" }},
		{"network.routes[3].gateway", func(n *PodNetwork) { n.Routes[2].Gateway = "10.251.1.1" }}, // 169.254.1.1 no longer on-link
		{"network.routes[3].source", func(n *PodNetwork) { n.Routes[3].Source = "10.251.1.6" }},
		{"network.neighbors[0].ip", func(n *PodNetwork) { n.Neighbors[0].Ip = "8.8.8.8" }},
		{"network.neighbors[0].mac", func(n *PodNetwork) { n.Neighbors[0].Mac = "x" }},
		{"network.neighbors[0].interface", func(n *PodNetwork) { n.Neighbors[0].Interface = "" }},
	} {
		n := goodNetwork()
		tc.mutate(n)
		err := n.Validate()
		if err == nil || !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), tc.field+":") {
			t.Errorf("%s: err = %v, want InvalidArgument naming %s", tc.field, err, tc.field)
		}
	}
}

func TestSetupSandboxValidatesNetwork(t *testing.T) {
	r := &SetupSandboxRequest{SandboxId: "pod1", Network: goodNetwork()}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	r = proto.Clone(r).(*SetupSandboxRequest)
	r.Network.Routes[0].Gateway = "192.168.0.1"
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "network.routes[0].gateway") {
		t.Fatalf("err = %v", err)
	}
}
