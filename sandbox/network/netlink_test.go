package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testNetNS makes a namespace shaped like a CNI bridge pod's: eth0 (a veth
// whose peer stays in the test's namespace, the "bridge side") with an
// address, a default route, an extra route and a permanent neighbour.
// It needs root; the namespace and the peer are removed at cleanup.
func testNetNS(t testing.TB) (nsPath, peer string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	b := make([]byte, 3)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	name, peer := "cocont-"+suffix, "cocopeer"+suffix
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", peer).Run()
		exec.Command("ip", "netns", "del", name).Run()
	})
	run("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", name)
	run("addr", "add", "10.252.7.1/24", "dev", peer)
	run("link", "set", peer, "up")
	run("-n", name, "link", "set", "eth0", "mtu", "1450", "address", "0a:58:0a:fc:07:05")
	run("-n", name, "addr", "add", "10.252.7.5/24", "dev", "eth0")
	run("-n", name, "link", "set", "eth0", "up")
	run("-n", name, "link", "set", "lo", "up")
	run("-n", name, "route", "add", "default", "via", "10.252.7.1", "dev", "eth0")
	run("-n", name, "route", "add", "10.96.0.0/12", "via", "10.252.7.1", "dev", "eth0", "metric", "5")
	run("-n", name, "neigh", "add", "10.252.7.9", "lladdr", "ee:ee:ee:ee:ee:ee", "dev", "eth0", "nud", "permanent")
	// A link that is down is not the pod's (like the fallback tunl0 that
	// the ipip module puts in every namespace): Setup leaves it alone.
	run("-n", name, "link", "add", "down0", "type", "veth", "peer", "name", "down1")
	return filepath.Join("/var/run/netns", name), peer
}

// tcState is what tc shows of eth0's ingress and the namespace's links.
func tcState(t testing.TB, nsPath string) (filters, links string) {
	t.Helper()
	ns := filepath.Base(nsPath)
	f, _ := exec.Command("tc", "-n", ns, "filter", "show", "dev", "eth0", "ingress").CombinedOutput()
	q, _ := exec.Command("tc", "-n", ns, "qdisc", "show", "dev", "eth0").CombinedOutput()
	l, err := exec.Command("ip", "-n", ns, "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, l)
	}
	return string(f) + string(q), string(l)
}

func TestSetupTeardown(t *testing.T) {
	nsPath, _ := testNetNS(t)
	ctx := context.Background()
	pod, err := Netlink{}.Setup(ctx, nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	if len(pod.Interfaces) != 1 {
		t.Fatalf("interfaces = %+v, want eth0 only", pod.Interfaces)
	}
	itf := pod.Interfaces[0]
	if itf.Name != "eth0" || itf.MAC.String() != "0a:58:0a:fc:07:05" || itf.MTU != 1450 || itf.Tap != "coco-tap0" || itf.TapFile == nil {
		t.Errorf("eth0 = %+v", itf)
	}
	if len(itf.Addrs) != 1 || itf.Addrs[0] != netip.MustParsePrefix("10.252.7.5/24") {
		t.Errorf("addresses = %v, want 10.252.7.5/24 only", itf.Addrs)
	}
	wantRoutes := map[string]bool{"0.0.0.0/0 via 10.252.7.1 m0": true, "10.96.0.0/12 via 10.252.7.1 m5": true}
	for _, r := range pod.Routes {
		k := r.Dst.String() + " via " + r.Gateway.String() + " m" + string(rune('0'+r.Metric))
		if !wantRoutes[k] || r.Dev != "eth0" {
			t.Errorf("unexpected route %+v", r)
		}
		delete(wantRoutes, k)
	}
	if len(wantRoutes) > 0 {
		t.Errorf("routes missing: %v (got %+v)", wantRoutes, pod.Routes)
	}
	if len(pod.Neighbors) != 1 || pod.Neighbors[0].IP.String() != "10.252.7.9" || pod.Neighbors[0].MAC.String() != "ee:ee:ee:ee:ee:ee" {
		t.Errorf("neighbours = %+v", pod.Neighbors)
	}
	if err := pod.Proto().Validate(); err != nil {
		t.Errorf("what the guest gets does not validate: %v", err)
	}
	filters, links := tcState(t, nsPath)
	if !strings.Contains(filters, "Egress Redirect to device coco-tap0") || !strings.Contains(links, "coco-tap0") {
		t.Fatalf("after Setup: filters:\n%s\nlinks:\n%s", filters, links)
	}

	// The data path: the bridge side resolves the pod's address; the ARP
	// request must come out of the tap, where the VMM would read it.
	if c, err := net.Dial("udp", "10.252.7.5:9"); err != nil {
		t.Fatal(err)
	} else {
		c.Write([]byte("x")) // needs the pod's MAC first: ARP
		c.Close()
	}
	frame := make([]byte, 2048)
	itf.TapFile.SetReadDeadline(time.Now().Add(3 * time.Second))
	const vnetHdr = 10 // struct virtio_net_hdr before every frame
	for {
		n, err := itf.TapFile.Read(frame)
		if err != nil {
			t.Fatalf("no ARP request came out of the tap: %v", err)
		}
		if n >= vnetHdr+14 && frame[vnetHdr+12] == 0x08 && frame[vnetHdr+13] == 0x06 {
			break // other frames (IPv6 multicast listener reports) may come first
		}
	}

	// The tap is not persistent: it goes with its last file.
	pod.Close()
	if _, links := tcState(t, nsPath); strings.Contains(links, "coco-tap0") {
		t.Errorf("tap left after its file was closed:\n%s", links)
	}
	if err := (Netlink{}).Teardown(ctx, nsPath); err != nil {
		t.Fatal(err)
	}
	if filters, _ := tcState(t, nsPath); strings.Contains(filters, "ingress") || strings.Contains(filters, "mirred") {
		t.Errorf("after Teardown eth0 still has:\n%s", filters)
	}
	// Twice, and on a namespace that is gone: not errors.
	if err := (Netlink{}).Teardown(ctx, nsPath); err != nil {
		t.Fatal(err)
	}
	exec.Command("ip", "netns", "del", filepath.Base(nsPath)).Run()
	if err := (Netlink{}).Teardown(ctx, nsPath); err != nil {
		t.Fatalf("teardown of a removed namespace: %v", err)
	}
	if err := (Netlink{}).Teardown(ctx, ""); err != nil {
		t.Fatal(err)
	}
}

// A filter of someone else on the same ingress qdisc survives Teardown,
// and so does the qdisc.
func TestTeardownKeepsOthersFilters(t *testing.T) {
	nsPath, _ := testNetNS(t)
	pod, err := Netlink{}.Setup(context.Background(), nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	ns := filepath.Base(nsPath)
	if out, err := exec.Command("tc", "-n", ns, "filter", "add", "dev", "eth0", "parent", "ffff:", "prio", "7", "protocol", "ip",
		"u32", "match", "u32", "0", "0", "flowid", "1:1").CombinedOutput(); err != nil {
		t.Fatalf("tc: %v: %s", err, out)
	}
	if err := (Netlink{}).Teardown(context.Background(), nsPath); err != nil {
		t.Fatal(err)
	}
	filters, links := tcState(t, nsPath)
	if strings.Contains(filters, "mirred") || !strings.Contains(filters, "pref 7") || strings.Contains(links, "coco-tap") {
		t.Errorf("after Teardown:\n%s\n%s", filters, links)
	}
}

func TestSetupMissingNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	_, err := Netlink{}.Setup(context.Background(), "/var/run/netns/coco-no-such-ns")
	if err == nil || !strings.Contains(err.Error(), "coco-no-such-ns") {
		t.Fatalf("err = %v, want one naming the namespace", err)
	}
}

// BenchmarkSetup is what networking adds to a pod's start on the host:
// taps, redirects and reading one CNI interface, in a fresh namespace as
// each pod has. Making the namespace, closing the tap (its device goes
// with the last file: QEMU's exit, off the start path) and Teardown are
// outside the timer. go test -bench Setup -benchtime 20x
func BenchmarkSetup(b *testing.B) {
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		nsPath, _ := testNetNS(b)
		b.StartTimer()
		pod, err := Netlink{}.Setup(ctx, nsPath)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		pod.Close()
		if err := (Netlink{}).Teardown(ctx, nsPath); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
