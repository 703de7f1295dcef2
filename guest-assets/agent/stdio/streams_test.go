package stdio

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// The host half-closing stdin reaches the process as EOF: the registry
// closes its FIFO end and, once the process started, asks for CloseIO.
func TestStdinEOFClosesIO(t *testing.T) {
	dir := t.TempDir()
	closed := make(chan string, 1)
	s := New(context.Background(), dir, func(_ context.Context, cid, exec string) error {
		closed <- cid + "/" + exec
		return nil
	}, nil)
	l, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go s.Serve(l)

	c, err := net.Dial("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "STREAM c1 e1 stdin\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	if line != "OK\n" {
		t.Fatalf("answer %q", line)
	}
	path, ok := s.Path("c1", "e1", api.StreamStdin)
	if !ok {
		t.Fatal("no fifo")
	}
	r, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	io.WriteString(c, "abc")
	c.(*net.UnixConn).CloseWrite()
	got, _ := io.ReadAll(r)
	if string(got) != "abc" {
		t.Errorf("fifo got %q", got)
	}
	select {
	case x := <-closed:
		t.Fatalf("CloseIO(%s) before the process started", x)
	case <-time.After(30 * time.Millisecond):
	}
	s.Started("c1", "e1")
	select {
	case x := <-closed:
		if x != "c1/e1" {
			t.Errorf("CloseIO for %s", x)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no CloseIO after stdin EOF")
	}
}

func TestBadHeaderAnswersErr(t *testing.T) {
	dir := t.TempDir()
	s := New(context.Background(), dir, nil, nil)
	l, _ := net.Listen("unix", filepath.Join(dir, "s.sock"))
	defer l.Close()
	go s.Serve(l)
	for _, hdr := range []string{"STREAM ../../etc - stdout\n", "HELLO\n", strings.Repeat("A", api.MaxStreamHeader+1)} {
		c, _ := net.Dial("unix", filepath.Join(dir, "s.sock"))
		io.WriteString(c, hdr)
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(line, "ERR ") || !strings.Contains(line, "invalid argument") {
			t.Errorf("header %.20q: answer %q", hdr, line)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("refused streams left files: %v", entries)
	}
}

// A host that gives up on a process before creating it (closes its output
// streams) leaves no FIFO or goroutine waiting in the guest.
func TestAbandonedStreamsReleased(t *testing.T) {
	dir := t.TempDir()
	s := New(context.Background(), dir, nil, nil)
	l, _ := net.Listen("unix", filepath.Join(dir, "s.sock"))
	defer l.Close()
	go s.Serve(l)
	c, _ := net.Dial("unix", filepath.Join(dir, "s.sock"))
	io.WriteString(c, "STREAM c9 - stdout\n")
	if line, _ := bufio.NewReader(c).ReadString('\n'); line != "OK\n" {
		t.Fatalf("answer %q", line)
	}
	if _, ok := s.Path("c9", "", api.StreamStdout); !ok {
		t.Fatal("not registered")
	}
	c.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, ok := s.Path("c9", "", api.StreamStdout)
		_, err := os.Stat(filepath.Join(dir, "c9", "init"))
		if !ok && os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("abandoned stream still registered (%v) or fifo dir present (%v)", ok, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
