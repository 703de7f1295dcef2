package vsock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeHybrid is an in-process hybrid-vsock endpoint: it refuses (closes)
// the first refuse connections like a VMM whose guest has no listener yet,
// then answers "OK <n>\n" immediately followed by greeting, so a dialer that
// over-reads would swallow the greeting.
type fakeHybrid struct {
	ln       *net.UnixListener
	refuse   int32
	seen     atomic.Int32
	greeting string
	reply    string // overrides the OK line when set
}

func startFake(t *testing.T, path string, f *fakeHybrid) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
}

func (f *fakeHybrid) serve(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	n := f.seen.Add(1)
	if n <= f.refuse {
		return // guest not listening yet: the endpoint hangs up
	}
	var port uint32
	if _, err := fmt.Sscanf(line, "CONNECT %d\n", &port); err != nil {
		return
	}
	reply := f.reply
	if reply == "" {
		reply = fmt.Sprintf("OK %d\n", 40000+port)
	}
	// One write: reply and first payload bytes arrive together.
	if _, err := io.WriteString(c, reply+f.greeting); err != nil {
		return
	}
	// Echo whatever comes next so the test can check the raw stream.
	_, _ = io.Copy(c, c)
}

func fastDialer() Dialer {
	return Dialer{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, HandshakeTimeout: time.Second}
}

func TestDialHybridRetriesThenStreams(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "v.sock")
	f := &fakeHybrid{refuse: 3, greeting: "hello\n"}
	startFake(t, sock, f)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := fastDialer().DialHybrid(ctx, sock, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := f.seen.Load(); got != 4 {
		t.Errorf("endpoint saw %d CONNECTs, want 4 (3 refused + 1)", got)
	}
	// The greeting was sent in the same write as the OK line: reading it
	// here proves the handshake did not buffer past the newline.
	r := bufio.NewReader(c)
	g, err := r.ReadString('\n')
	if err != nil || g != "hello\n" {
		t.Fatalf("first stream bytes = %q, %v; want the greeting", g, err)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if e, err := r.ReadString('\n'); err != nil || e != "ping\n" {
		t.Fatalf("echo = %q, %v", e, err)
	}
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Errorf("conn %T has no CloseWrite; stdio half-close needs it", c)
	}
}

func TestDialHybridWaitsForSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "late.sock")
	go func() {
		time.Sleep(100 * time.Millisecond)
		startFake(t, sock, &fakeHybrid{})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := fastDialer().DialHybrid(ctx, sock, 7)
	if err != nil {
		t.Fatalf("dial should survive ENOENT until the socket appears: %v", err)
	}
	c.Close()
}

func TestDialHybridDeadlineError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "never.sock")
	f := &fakeHybrid{refuse: 1 << 30}
	startFake(t, sock, f)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := fastDialer().DialHybrid(ctx, sock, 1024)
	if err == nil {
		t.Fatal("dial succeeded against an endpoint that always hangs up")
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("dial overran its 200ms deadline: %s", time.Since(start))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error does not wrap the deadline: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{sock, "port 1024", "not ready after", "EOF"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
}

func TestDialHybridBadReplyIsFinal(t *testing.T) {
	for _, reply := range []string{"NOPE\n", "OK notaport\n", strings.Repeat("x", 100)} {
		sock := filepath.Join(t.TempDir(), "bad.sock")
		f := &fakeHybrid{reply: reply}
		startFake(t, sock, f)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := fastDialer().DialHybrid(ctx, sock, 1)
		cancel()
		if err == nil {
			t.Fatalf("reply %q accepted", reply)
		}
		if errors.Is(err, context.DeadlineExceeded) || f.seen.Load() != 1 {
			t.Errorf("reply %q: want one attempt and a protocol error, got %d attempts: %v", reply, f.seen.Load(), err)
		}
	}
}

func TestDialHybridNotASocket(t *testing.T) {
	// A path that exists but is a directory is a configuration error, not
	// "not ready": it must fail at once.
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := fastDialer().DialHybrid(ctx, dir, 1)
	if err == nil || time.Since(start) > time.Second {
		t.Fatalf("want an immediate error, got %v after %s", err, time.Since(start))
	}
}

func TestParseOK(t *testing.T) {
	for in, want := range map[string]uint32{"OK 0": 0, "OK 1024": 1024, "OK 4294967295": 4294967295} {
		got, err := parseOK(in)
		if err != nil || got != want {
			t.Errorf("parseOK(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "OK", "OK ", "ok 1", "OK -1", "OK 4294967296", "OK 1 2"} {
		if _, err := parseOK(in); err == nil {
			t.Errorf("parseOK(%q) accepted", in)
		}
	}
}

func TestPickCID(t *testing.T) {
	ctx := context.Background()
	seq := []uint32{0, 1, 2, ^uint32(0), 10, 11, 12}
	i := 0
	next := func() uint32 { v := seq[i]; i++; return v }
	var tried []uint32
	cid, err := pickCID(ctx, next, func(c uint32) error {
		tried = append(tried, c)
		if c < 12 {
			return syscall.EADDRINUSE
		}
		return nil
	})
	if err != nil || cid != 12 {
		t.Fatalf("pickCID = %d, %v; want 12", cid, err)
	}
	if fmt.Sprint(tried) != "[10 11 12]" {
		t.Errorf("reserved CIDs were offered or order wrong: tried %v", tried)
	}
	// Any error other than EADDRINUSE stops at once.
	_, err = pickCID(ctx, func() uint32 { return 5 }, func(uint32) error { return syscall.EPERM })
	if !errors.Is(err, syscall.EPERM) {
		t.Errorf("want EPERM, got %v", err)
	}
	// All in use: bounded, says so.
	_, err = pickCID(ctx, func() uint32 { return 5 }, func(uint32) error { return syscall.EADDRINUSE })
	if err == nil || !strings.Contains(err.Error(), "no free CID") {
		t.Errorf("want no free CID, got %v", err)
	}
}

func TestReserveCIDMissingDevice(t *testing.T) {
	_, err := ReserveCID(context.Background(), filepath.Join(t.TempDir(), "vhost-vsock"))
	if err == nil || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("want ENOENT for a missing device, got %v", err)
	}
}

func TestDialVhostDeadline(t *testing.T) {
	// CID 4294967294 belongs to nobody; whether this host has AF_VSOCK or
	// not, the dial must end by the deadline with an error naming the CID.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := fastDialer().DialVhost(ctx, 4294967294, 1024)
	if err == nil {
		t.Fatal("dial to a non-existent CID succeeded")
	}
	if time.Since(start) > time.Second {
		t.Errorf("dial overran its 300ms deadline: %s", time.Since(start))
	}
	if !strings.Contains(err.Error(), "cid 4294967294 port 1024") {
		t.Errorf("error does not name the target: %v", err)
	}
}

// A dialler that gives up before the guest accepts must not close its
// socket before the endpoint has written its "OK": vhost-device-vsock 0.3
// panics on the EPIPE, and the VM's vsock is dead from then on. The fake
// answers late and checks its write reaches an open socket.
func TestDialHybridAbandonedRequestLingersUntilAnswered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wrote := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			wrote <- err
			return
		}
		defer c.Close()
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			wrote <- err
			return
		}
		time.Sleep(300 * time.Millisecond) // the guest accepts late
		_, err = c.Write([]byte("OK 7\n"))
		wrote <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := (Dialer{HandshakeTimeout: time.Minute}).hybridOnce(ctx, path, 1025); err == nil {
		t.Fatal("handshake past the deadline succeeded")
	}
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("the endpoint's late OK hit a closed socket: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the endpoint never answered")
	}
}
