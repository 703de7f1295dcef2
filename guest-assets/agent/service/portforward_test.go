package service

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/configs/policies"
)

// loopbackServer stands in for a container's server on the guest's
// loopback: it counts connections and answers "hi <what it read>".
type loopbackServer struct {
	port     uint16
	accepted atomic.Int32
}

func startLoopbackServer(t *testing.T) *loopbackServer {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := &loopbackServer{port: uint16(l.Addr().(*net.TCPAddr).Port)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				io.WriteString(c, "hi "+string(b))
			}()
		}
	}()
	return s
}

func TestPortForwardRefusedBeforeSetup(t *testing.T) {
	h := start(t)
	srv := startLoopbackServer(t)
	_, err := h.client.OpenPortForward(context.Background(), srv.port)
	wantErr(t, err, errdefs.IsFailedPrecondition, "SetupSandbox")
	if srv.accepted.Load() != 0 {
		t.Fatal("a refused port-forward reached the guest's server")
	}
}

// The shipped TEE default refuses port-forward: a loopback port can be a
// guest-private service (the secret endpoint, a debug port).
func TestPortForwardDeniedByDefaultTEEPolicy(t *testing.T) {
	h, ctx := startPolicy(t, policies.DefaultTEE)
	srv := startLoopbackServer(t)
	_, err := h.client.OpenPortForward(ctx, srv.port)
	wantErr(t, err, errdefs.IsPermissionDenied, "PortForwardRequest")
	time.Sleep(50 * time.Millisecond)
	if srv.accepted.Load() != 0 {
		t.Fatal("a denied port-forward reached the guest's server")
	}
}

// An owner lists the ports the host may forward to.
func TestPortForwardOwnerPolicyAllowsListedPort(t *testing.T) {
	srv := startLoopbackServer(t)
	other := startLoopbackServer(t)
	src := strings.Replace(policies.DefaultTEE, "allowed_port_forward_ports := []",
		"allowed_port_forward_ports := ["+strconv.Itoa(int(srv.port))+"]", 1)
	h, ctx := startPolicy(t, src)

	conn, err := h.client.OpenPortForward(ctx, srv.port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "there")
	conn.(interface{ CloseWrite() error }).CloseWrite()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "hi there" {
		t.Fatalf("got %q, %v; want the server's answer after a half-close", got, err)
	}

	_, err = h.client.OpenPortForward(ctx, other.port)
	wantErr(t, err, errdefs.IsPermissionDenied, "PortForwardRequest")
	if other.accepted.Load() != 0 {
		t.Fatal("a port the owner did not list was dialed")
	}
}

func TestPortForwardNothingListening(t *testing.T) {
	h, ctx := startPolicy(t, policies.AllowAll)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	_, err = h.client.OpenPortForward(ctx, port)
	wantErr(t, err, errdefs.IsNotFound, "nothing to connect to")
}
