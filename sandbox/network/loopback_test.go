package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
)

// fakeGuest stands in for the agent: it records the ports asked for and
// answers on a pipe with "port <n>: <what the client sent>".
type fakeGuest struct {
	mu    sync.Mutex
	ports []uint16
}

func (g *fakeGuest) open(ctx context.Context, port uint16) (net.Conn, error) {
	g.mu.Lock()
	g.ports = append(g.ports, port)
	g.mu.Unlock()
	if port == 4444 {
		return nil, errors.New("guest refused port-forward to port 4444: denied by agent policy")
	}
	host, guest := net.Pipe()
	go func() {
		defer guest.Close()
		b := make([]byte, 64)
		n, _ := guest.Read(b)
		fmt.Fprintf(guest, "port %d: %s", port, b[:n])
	}()
	return host, nil
}

// dialIn connects to addr from inside the namespace, as containerd's CRI
// does, and returns what comes back after sending "ping".
func dialIn(t *testing.T, nsPath, network, addr string) (string, error) {
	t.Helper()
	var c net.Conn
	err := inNetNS(nsPath, func() error {
		var err error
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping")
	b, err := io.ReadAll(c)
	return string(b), err
}

func loopbackTablePresent(t *testing.T, nsPath string) bool {
	t.Helper()
	var present bool
	withNSFd(nsPath, func(fd int) error {
		c, err := nftables.New(nftables.WithNetNSFd(fd))
		if err != nil {
			t.Fatal(err)
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			present = present || tb.Name == loopbackTable
		}
		return nil
	})
	return present
}

func TestForwardLoopback(t *testing.T) {
	nsPath, _ := testNetNS(t)
	g := &fakeGuest{}
	f, err := Netlink{}.ForwardLoopback(context.Background(), nsPath, g.open)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ports := f.Ports()
	for _, tc := range []struct{ network, addr, want string }{
		{"tcp4", "127.0.0.1:8080", "port 8080: ping"},
		{"tcp6", "[::1]:9090", "port 9090: ping"},
		// The listener's own port reaches the guest's port of that number.
		{"tcp4", fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("port %d: ping", ports[0])},
	} {
		got, err := dialIn(t, nsPath, tc.network, tc.addr)
		if err != nil || got != tc.want {
			t.Errorf("%s %s: got %q, %v; want %q", tc.network, tc.addr, got, err, tc.want)
		}
	}
	// A refusal in the guest closes the client's connection.
	if got, _ := dialIn(t, nsPath, "tcp4", "127.0.0.1:4444"); got != "" {
		t.Errorf("refused port answered %q", got)
	}
	// Traffic that is not to loopback is left alone.
	if _, err := dialIn(t, nsPath, "tcp4", "10.252.7.5:8080"); err == nil {
		t.Error("a connection to the pod address reached the forwarder")
	}

	if !loopbackTablePresent(t, nsPath) {
		t.Fatal("no nftables table while forwarding")
	}
	f.Close()
	if err := (Netlink{}).Teardown(context.Background(), nsPath); err != nil {
		t.Fatal(err)
	}
	if loopbackTablePresent(t, nsPath) {
		t.Fatal("nftables table left after Teardown")
	}
	// Nothing listens any more: a client is refused, not hung.
	if _, err := dialIn(t, nsPath, "tcp4", "127.0.0.1:8080"); err == nil {
		t.Fatal("loopback still forwarded after Close and Teardown")
	}
}

// A shim that died left its rule: Teardown (the `delete` path) removes
// it, and a namespace that is gone is not an error.
func TestTeardownLeftoverRuleAndGoneNamespace(t *testing.T) {
	nsPath, _ := testNetNS(t)
	if err := withNSFd(nsPath, func(fd int) error { return installLoopbackRedirect(fd, 40000, 0) }); err != nil {
		t.Fatal(err)
	}
	// Installing again (a restarted shim) replaces it.
	if err := withNSFd(nsPath, func(fd int) error { return installLoopbackRedirect(fd, 40001, 40001) }); err != nil {
		t.Fatal(err)
	}
	if err := (Netlink{}).Teardown(context.Background(), nsPath); err != nil {
		t.Fatal(err)
	}
	if loopbackTablePresent(t, nsPath) {
		t.Fatal("leftover table not removed")
	}
	name := filepath.Base(nsPath)
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	if err := (Netlink{}).Teardown(context.Background(), nsPath); err != nil {
		t.Fatalf("gone namespace is an error: %v", err)
	}
}
