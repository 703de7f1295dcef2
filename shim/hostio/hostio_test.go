package hostio

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "test"), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mkfifo(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// readAll plays containerd's side of an output FIFO.
func readAll(t *testing.T, path string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			ch <- ""
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		ch <- string(b)
	}()
	return ch
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("containerd's side never saw EOF")
		return ""
	}
}

// FIFOs, the default: output reaches containerd's readers, which see EOF
// once the sandbox closes the streams; CloseStdin gives the sandbox EOF.
func TestFIFOs(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	in, out, errp := mkfifo(t, dir, "in"), mkfifo(t, dir, "out"), mkfifo(t, dir, "err")
	gotOut, gotErr := readAll(t, out), readAll(t, errp)
	p, err := Open(ctx, "c1", stdio.Stdio{Stdin: in, Stdout: out, Stderr: errp})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	w, err := os.OpenFile(in, os.O_WRONLY, 0) // containerd keeps stdin open
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sio := p.IO()
	if sio.Stdin == nil || sio.Stdout == nil || sio.Stderr == nil || sio.Terminal {
		t.Fatalf("IO = %+v", sio)
	}
	w.Write([]byte("input"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(sio.Stdin, buf); err != nil || string(buf) != "input" {
		t.Fatalf("stdin read %q, %v", buf, err)
	}
	readDone := make(chan error, 1)
	go func() {
		_, err := sio.Stdin.Read(make([]byte, 1)) // blocks: nothing more written
		readDone <- err
	}()
	time.Sleep(50 * time.Millisecond)
	p.CloseStdin()
	select {
	case err := <-readDone:
		if err != io.EOF {
			t.Fatalf("blocked stdin read after CloseStdin: %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CloseStdin did not unblock the stdin read")
	}
	p.CloseStdin() // twice is fine, as in runc's shim

	sio.Stdout.Write([]byte("to stdout"))
	sio.Stderr.Write([]byte("to stderr"))
	sio.Stdout.Close()
	sio.Stderr.Close()
	if err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if s := recv(t, gotOut); s != "to stdout" {
		t.Fatalf("stdout %q", s)
	}
	if s := recv(t, gotErr); s != "to stderr" {
		t.Fatalf("stderr %q", s)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// Drain waits for the sandbox to finish writing, bounded by its context.
func TestDrainWaitsForTheSandbox(t *testing.T) {
	dir := t.TempDir()
	out := mkfifo(t, dir, "out")
	readAll(t, out)
	p, err := Open(testCtx(t), "c1", stdio.Stdio{Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Drain(short); err == nil {
		t.Fatal("Drain returned while stdout was still open")
	}
	p.IO().Stdout.Close()
	if err := p.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// file:// appends both streams to one file, closed after both end.
func TestFileURI(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "sub", "c.log")
	p, err := Open(testCtx(t), "c1", stdio.Stdio{Stdout: "file://" + log, Stderr: "file://" + log})
	if err != nil {
		t.Fatal(err)
	}
	sio := p.IO()
	sio.Stdout.Write([]byte("out\n"))
	sio.Stdout.Close()
	if _, err := sio.Stderr.Write([]byte("err\n")); err != nil {
		t.Fatalf("stderr closed with stdout: %v", err)
	}
	sio.Stderr.Close()
	if err := p.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	p.Close()
	got, _ := os.ReadFile(log)
	if string(got) != "out\nerr\n" {
		t.Fatalf("log %q", got)
	}
	// "file://relative/x" would mean host "relative", path "/x".
	if _, err := Open(testCtx(t), "c1", stdio.Stdio{Stdout: "file://relative/x"}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("file:// with a host: %v, want InvalidArgument", err)
	}
}

// A terminal has one output stream; the pty itself lives in the guest.
func TestTerminal(t *testing.T) {
	dir := t.TempDir()
	out := mkfifo(t, dir, "out")
	got := readAll(t, out)
	p, err := Open(testCtx(t), "c1", stdio.Stdio{Stdout: out, Terminal: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sio := p.IO()
	if !sio.Terminal || sio.Stderr != nil || sio.Stdout == nil {
		t.Fatalf("terminal IO = %+v", sio)
	}
	sio.Stdout.Write([]byte("$ "))
	sio.Stdout.Close()
	if s := recv(t, got); s != "$ " {
		t.Fatalf("terminal output %q", s)
	}
}

// binary:// starts containerd's logging-driver protocol: the logger gets
// the output pipes as fds 3 and 4 and signals readiness on fd 5.
func TestBinaryLogger(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "logger.sh")
	// Close fd 5 (ready) before forking the copiers, or they would hold it.
	body := "#!/bin/sh\nexec 5>&-\n/bin/cat <&3 > \"$2/stdout\" &\n/bin/cat <&4 > \"$2/stderr\" &\nwait\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := Open(testCtx(t), "c1", stdio.Stdio{Stdout: "binary://" + script + "?dir=" + dir, Stderr: "binary://" + script + "?dir=" + dir})
	if err != nil {
		t.Fatal(err)
	}
	sio := p.IO()
	sio.Stdout.Write([]byte("logged out"))
	sio.Stderr.Write([]byte("logged err"))
	sio.Stdout.Close()
	sio.Stderr.Close()
	if err := p.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"stdout": "logged out", "stderr": "logged err"} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, _ := os.ReadFile(filepath.Join(dir, name))
			if string(got) == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("logger %s = %q, want %q", name, got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatalf("stopping the logger: %v", err)
	}
}

func TestBadStdio(t *testing.T) {
	_, err := Open(testCtx(t), "c1", stdio.Stdio{Stdout: "tcp://10.0.0.1:80"})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "tcp") {
		t.Fatalf("unknown scheme: %v", err)
	}
	if _, err := Open(testCtx(t), "c1", stdio.Stdio{Stdout: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("missing stdout path accepted")
	}
	// Nothing at all is fine: a process without stdio.
	p, err := Open(testCtx(t), "c1", stdio.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	if sio := p.IO(); sio.Stdin != nil || sio.Stdout != nil || sio.Stderr != nil {
		t.Fatalf("null stdio = %+v", sio)
	}
	if err := p.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	p.Close()
}
