package portforward

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// hostile is a port-forward server on a TCP listener standing in for vsock,
// whose dials go to one loopback backend and are counted.
type hostile struct {
	addr    string
	dials   atomic.Int32
	checked atomic.Int32
	dialed  chan string // network address of every dial
	backend net.Listener
}

func startHostile(t *testing.T, cfg Config, deny error) *hostile {
	t.Helper()
	h := &hostile{dialed: make(chan string, 16)}
	var err error
	h.backend, err = net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.backend.Close() })
	cfg.Check = func(ctx context.Context, port uint16) error {
		h.checked.Add(1)
		return deny
	}
	cfg.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		h.dials.Add(1)
		h.dialed <- network + " " + address
		return (&net.Dialer{}).DialContext(ctx, "tcp4", h.backend.Addr().String())
	}
	s := New(cfg)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(context.Background(), l)
	t.Cleanup(func() { l.Close(); s.Close() })
	h.addr = l.Addr().String()
	return h
}

// send writes raw bytes as the host and returns the guest's answer line.
func (h *hostile) send(t *testing.T, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp4", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	line, _ := bufio.NewReader(c).ReadString('\n')
	return line
}

func TestHostileHeadersDialNothing(t *testing.T) {
	h := startHostile(t, Config{}, nil)
	for _, raw := range []string{
		"FORWARD 0\n", "FORWARD 65536\n", "FORWARD -1\n", "FORWARD 080\n",
		"FORWARD 10.0.0.1:80\n", "FORWARD [::1]:80\n", "FORWARD 80 10.0.0.1\n",
		"CONNECT 80\n", "\n", "FORWARD\n", "FORWARD 80\x00\n",
		"FORWARD " + strings.Repeat("8", 4096) + "\n", // oversized: refused at the bound
		strings.Repeat("A", 4096),                     // no newline at all
	} {
		got := h.send(t, raw)
		if !strings.HasPrefix(got, "ERR ") || !strings.Contains(got, errdefs.ErrInvalidArgument.Error()) {
			t.Errorf("%.40q: answer %q, want ERR ... invalid argument", raw, got)
		}
	}
	if n := h.checked.Load() + h.dials.Load(); n != 0 {
		t.Fatalf("bad headers reached the policy or a dial %d time(s)", n)
	}
}

func TestSlowLorisHeaderTimesOut(t *testing.T) {
	h := startHostile(t, Config{HeaderTimeout: 200 * time.Millisecond}, nil)
	c, err := net.Dial("tcp4", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	// One byte at a time, never a newline within the timeout.
	go func() {
		for _, b := range []byte("FORWARD 8") {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "ERR ") || time.Since(start) > 2*time.Second {
		t.Fatalf("answer %q after %s: want ERR at the header timeout", line, time.Since(start))
	}
	if h.checked.Load()+h.dials.Load() != 0 {
		t.Fatal("a header that never came reached the policy or a dial")
	}
}

func TestPolicyDenyDialsNothing(t *testing.T) {
	h := startHostile(t, Config{}, fmt.Errorf("PortForwardRequest denied by agent policy: %w", errdefs.ErrPermissionDenied))
	got := h.send(t, "FORWARD 8080\n")
	if !strings.HasPrefix(got, "ERR ") || !strings.Contains(got, "denied by agent policy") {
		t.Fatalf("answer %q, want the policy's refusal", got)
	}
	if h.checked.Load() != 1 || h.dials.Load() != 0 {
		t.Fatalf("checked %d, dialed %d: want 1, 0", h.checked.Load(), h.dials.Load())
	}
}

func TestNoCheckRefusesAll(t *testing.T) {
	s := New(Config{Dial: func(context.Context, string, string) (net.Conn, error) {
		t.Error("dialed without a check")
		return nil, errdefs.ErrInternal
	}})
	if _, err := s.connect(context.Background(), 80); !errdefs.IsNotImplemented(err) {
		t.Fatalf("got %v, want NotImplemented", err)
	}
}

func TestForwardSplicesWithHalfClose(t *testing.T) {
	h := startHostile(t, Config{}, nil)
	// The backend answers once its client half-closed: an echo of all it read.
	go func() {
		c, err := h.backend.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		c.Write(append([]byte("echo:"), b...))
	}()
	c, err := net.Dial("tcp4", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "FORWARD 8080\nhello")
	r := bufio.NewReader(c)
	if line, _ := r.ReadString('\n'); line != "OK\n" {
		t.Fatalf("answer %q, want OK", line)
	}
	c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "echo:hello" {
		t.Fatalf("got %q, %v; want echo:hello", rest, err)
	}
	if got := <-h.dialed; got != "tcp4 127.0.0.1:8080" {
		t.Fatalf("dialed %q, want tcp4 127.0.0.1:8080 (the host names a port only)", got)
	}
}

func TestIPv6FallbackAndNothingListening(t *testing.T) {
	var mu sync.Mutex
	var dialed []string
	s := New(Config{
		Check: func(context.Context, uint16) error { return nil },
		Dial: func(_ context.Context, network, address string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, network+" "+address)
			mu.Unlock()
			return nil, fmt.Errorf("connection refused")
		},
	})
	_, err := s.connect(context.Background(), 9000)
	if !errdefs.IsNotFound(err) {
		t.Fatalf("got %v, want NotFound", err)
	}
	if want := "tcp4 127.0.0.1:9000,tcp6 [::1]:9000"; strings.Join(dialed, ",") != want {
		t.Fatalf("dialed %v, want %s", dialed, want)
	}
}

func TestConcurrentForwardsAreBounded(t *testing.T) {
	h := startHostile(t, Config{MaxConns: 2, HeaderTimeout: 5 * time.Second}, nil)
	// Two handshakes that hold their slots (no header yet).
	for range 2 {
		c, err := net.Dial("tcp4", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(100 * time.Millisecond) // let the server take both slots
	got := h.send(t, "FORWARD 80\n")
	if !strings.HasPrefix(got, "ERR ") || !strings.Contains(got, errdefs.ErrResourceExhausted.Error()) {
		t.Fatalf("third connection: %q, want ERR ... resource exhausted", got)
	}
	if h.dials.Load() != 0 {
		t.Fatal("a connection over the bound was dialed")
	}
}

func TestReservedPortNeverForwarded(t *testing.T) {
	h := startHostile(t, Config{Reserved: map[uint16]string{8006: "the workload API"}}, nil)
	got := h.send(t, "FORWARD 8006\n")
	if !strings.HasPrefix(got, "ERR ") || !strings.Contains(got, "workload API") {
		t.Fatalf("answer %q, want a refusal naming the reserved service", got)
	}
	if h.checked.Load()+h.dials.Load() != 0 {
		t.Fatal("a reserved port reached the policy or a dial")
	}
}
