//go:build integration

package integration

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// netPeer is a network namespace the test makes and plugs into the
// harness's CNI bridge, with an address of the pod subnet: a client or
// server on the pods' network that is neither the node nor a pod.
type netPeer struct {
	name string // namespace
	path string
	host string // the veth end on the bridge
	ip   netip.Addr
}

// podSubnet is the harness's CNI subnet (a /24), from its conflist.
func podSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(shared.ctrd.Root, "cni", "10-coco-it.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []struct {
			IPAM struct {
				Ranges [][]struct{ Subnet string } `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &conf); err != nil || len(conf.Plugins) == 0 || len(conf.Plugins[0].IPAM.Ranges) == 0 || len(conf.Plugins[0].IPAM.Ranges[0]) == 0 {
		t.Fatalf("harness conflist: %v: %s", err, b)
	}
	pfx, err := netip.ParsePrefix(conf.Plugins[0].IPAM.Ranges[0][0].Subnet)
	if err != nil || pfx.Bits() != 24 || !pfx.Addr().Is4() {
		t.Fatalf("harness subnet %q: want an IPv4 /24", conf.Plugins[0].IPAM.Ranges[0][0].Subnet)
	}
	return pfx
}

// newNetPeer makes a namespace with an address of the harness's CNI
// subnet, host number 250, far from host-local's sequential allocations.
// attach plugs it into the bridge, which exists once a pod has run.
func newNetPeer(t *testing.T) *netPeer {
	t.Helper()
	net4 := podSubnet(t).Addr().As4()
	p := &netPeer{ip: netip.AddrFrom4([4]byte{net4[0], net4[1], net4[2], 250})}
	b := make([]byte, 3)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	p.name, p.host = "coco-peer-"+suffix, "cocopeer"+suffix
	p.path = filepath.Join("/var/run/netns", p.name)
	ipCmd(t, "netns", "add", p.name)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", p.host).Run()
		exec.Command("ip", "netns", "del", p.name).Run()
	})
	ipCmd(t, "link", "add", p.host, "type", "veth", "peer", "name", "eth0", "netns", p.name)
	ipCmd(t, "-n", p.name, "addr", "add", p.ip.String()+"/24", "dev", "eth0")
	ipCmd(t, "-n", p.name, "link", "set", "eth0", "up")
	ipCmd(t, "-n", p.name, "link", "set", "lo", "up")
	return p
}

// attach plugs the peer into the bridge that holds the subnet's gateway.
func (p *netPeer) attach(t *testing.T) {
	t.Helper()
	net4 := p.ip.As4()
	gw := netip.AddrFrom4([4]byte{net4[0], net4[1], net4[2], 1})
	bridge := ""
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 3 && strings.HasPrefix(f[3], gw.String()+"/") {
			bridge = f[1]
		}
	}
	if bridge == "" {
		t.Fatalf("no bridge holds the pod network's gateway %s (run a pod first)", gw)
	}
	ipCmd(t, "link", "set", p.host, "master", bridge, "up")
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// in runs fn on a thread inside the peer's namespace; sockets fn opens
// stay there. The thread is dropped afterwards rather than reused.
func (p *netPeer) in(fn func() error) error {
	target, err := netns.GetFromPath(p.path)
	if err != nil {
		return err
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with us
		if err := netns.Set(target); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}

// serveHTTP serves body at / on the peer's address until the test ends.
func (p *netPeer) serveHTTP(t *testing.T, port int, body string) {
	t.Helper()
	var ln net.Listener
	if err := p.in(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", p.ip, port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// serveDNS answers A queries for the names in zone (fully qualified,
// lower case, with the trailing dot) on the peer's UDP port 53; any other
// name is NXDOMAIN, and other types of a known name have no answer.
func (p *netPeer) serveDNS(t *testing.T, zone map[string]netip.Addr) {
	t.Helper()
	var conn net.PacketConn
	if err := p.in(func() (err error) {
		conn, err = net.ListenPacket("udp", p.ip.String()+":53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply, err := dnsAnswer(buf[:n], zone); err == nil {
				conn.WriteTo(reply, from)
			}
		}
	}()
}

// dnsAnswer builds the reply to a one-question DNS query (RFC 1035 4.1).
func dnsAnswer(q []byte, zone map[string]netip.Addr) ([]byte, error) {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil, errors.New("want one question")
	}
	var name []string
	i := 12
	for {
		if i >= len(q) {
			return nil, errors.New("short question")
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l > 63 || i+l > len(q) {
			return nil, errors.New("bad label")
		}
		name = append(name, strings.ToLower(string(q[i:i+l])))
		i += l
	}
	if i+4 > len(q) {
		return nil, errors.New("short question")
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	question := q[12 : i+4]
	addr, known := zone[strings.Join(name, ".")+"."]
	out := make([]byte, 12, 64)
	copy(out, q[:2])        // id
	flags := uint16(0x8180) // response, recursion desired and available
	if !known {
		flags |= 3 // NXDOMAIN
	}
	binary.BigEndian.PutUint16(out[2:], flags)
	binary.BigEndian.PutUint16(out[4:], 1)
	out = append(out, question...)
	if known && qtype == 1 {
		binary.BigEndian.PutUint16(out[6:], 1)
		a := addr.As4()
		out = append(out, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4) // name at 12, A, IN, TTL 60, 4 bytes
		out = append(out, a[:]...)
	}
	return out, nil
}
