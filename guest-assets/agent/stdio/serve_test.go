package stdio

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/fifo"
)

// failingListener fails its first Accepts with err, then accepts from l.
type failingListener struct {
	net.Listener
	fails int
	err   error
}

func (f *failingListener) Accept() (net.Conn, error) {
	if f.fails > 0 {
		f.fails--
		return nil, &net.OpError{Op: "accept", Net: "vsock", Err: os.NewSyscallError("accept4", f.err)}
	}
	return f.Listener.Accept()
}

// Running out of fds stops the stream port only while it lasts (issue 27:
// before, the first EMFILE ended Serve and the port for good).
func TestServeSurvivesEMFILE(t *testing.T) {
	dir := t.TempDir()
	s := New(context.Background(), dir, nil, nil)
	l, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() { served <- s.Serve(&failingListener{Listener: l, fails: 3, err: syscall.EMFILE}) }()
	c, err := net.Dial("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "STREAM c1 e1 stdout\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if line != "OK\n" {
		select {
		case err := <-served:
			t.Fatalf("Serve returned %v after EMFILE", err)
		default:
		}
		t.Fatalf("answer %q, %v", line, err)
	}
	s.Release("c1", "e1")
}

// Other accept errors still end Serve (and the agent logs it).
func TestServeReturnsOnOtherErrors(t *testing.T) {
	dir := t.TempDir()
	s := New(context.Background(), dir, nil, nil)
	l, _ := net.Listen("unix", filepath.Join(dir, "s.sock"))
	defer l.Close()
	err := s.Serve(&failingListener{Listener: l, fails: 1, err: syscall.EINVAL})
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Serve: %v", err)
	}
}

func fdCount(t *testing.T) int {
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(e)
}

// An exec's streams, from the handshake to Release, leave no fd behind in
// the guest: 1,200 streams under a 256-fd limit (as an ExecSync: stdout and
// stderr, the task service writing and closing its FIFO ends).
func TestStreamsKeepFDsFlat(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = min(lim.Cur, 256)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) })

	dir := t.TempDir()
	s := New(context.Background(), dir, nil, nil)
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go s.Serve(l)
	kinds := []string{"stdout", "stderr"}
	exec := func(i int) {
		id := fmt.Sprintf("e%d", i)
		var conns []net.Conn
		for _, k := range kinds {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatalf("exec %d: %v", i, err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "STREAM c1 "+id+" "+k+"\n")
			if line, err := bufio.NewReader(c).ReadString('\n'); line != "OK\n" {
				t.Fatalf("exec %d %s: answer %q, %v", i, k, line, err)
			}
			conns = append(conns, c)
		}
		s.Claim("c1", id)
		for _, k := range kinds {
			p, _ := s.Path("c1", id, k)
			w, err := fifo.OpenFifo(context.Background(), p, syscall.O_WRONLY, 0)
			if err != nil {
				t.Fatalf("exec %d: %v", i, err)
			}
			io.WriteString(w, k)
			w.Close()
		}
		s.Started("c1", id)
		for j, c := range conns {
			if b, _ := io.ReadAll(c); string(b) != kinds[j] {
				t.Fatalf("exec %d: %s stream got %q", i, kinds[j], b)
			}
			c.Close()
		}
		s.Release("c1", id)
	}
	exec(0)
	before := fdCount(t)
	for i := 1; i <= 600; i++ {
		exec(i)
	}
	var after int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if after = fdCount(t); after <= before+2 || time.Now().After(deadline) {
			break
		}
	}
	if after > before+2 {
		t.Errorf("fds grew from %d to %d over 600 execs (1,200 streams)", before, after)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "c1")); len(entries) != 0 {
		t.Errorf("%d exec directories left", len(entries))
	}
}
