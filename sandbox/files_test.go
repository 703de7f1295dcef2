package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hostFilesWithin runs hostFiles for one bind mount of src and fails the
// test if it does not return within a few seconds (a blocked open or read).
func hostFilesWithin(t *testing.T, src string) (string, error) {
	t.Helper()
	type result struct {
		content string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		files, err := hostFiles(&specs.Spec{Mounts: []specs.Mount{{Destination: "/etc/hosts", Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}}, false)
		r := result{err: err}
		if len(files) == 1 {
			r.content = string(files[0].Content)
		}
		done <- r
	}()
	select {
	case r := <-done:
		return r.content, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("hostFiles(%s) hangs", src)
		return "", nil
	}
}

func wantRefused(t *testing.T, what string, err error, words ...string) {
	t.Helper()
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("%s: err = %v, want InvalidArgument", what, err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s: error %q does not say %q", what, err, w)
		}
	}
}

// A bind-mounted host file swapped for a FIFO (nobody writes to it) is
// refused at once, naming the path and what it is; the old stat-then-read
// blocked forever in the read.
func TestHostFileFIFOSwappedInIsRefused(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "hosts")
	if err := os.WriteFile(src, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(fifo, src); err != nil {
		t.Fatal(err)
	}
	_, err := hostFilesWithin(t, src)
	wantRefused(t, "FIFO", err, src, "named pipe", "/etc/hosts")
}

// A symlink is resolved once, at the open, as runc's bind mount would
// (hostPath /etc/localtime is a link); a link to a FIFO is still refused.
func TestHostFileSymlinkResolvedOnce(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real")
	if err := os.WriteFile(target, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "hosts")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if got, err := hostFilesWithin(t, link); err != nil || got != "x" {
		t.Fatalf("link to a regular file: %q, %v", got, err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	toFIFO := filepath.Join(dir, "to-fifo")
	if err := os.Symlink(fifo, toFIFO); err != nil {
		t.Fatal(err)
	}
	_, err := hostFilesWithin(t, toFIFO)
	wantRefused(t, "link to a FIFO", err, toFIFO, "named pipe")
}

// Devices and sockets are refused without being opened for reading.
func TestHostFileDeviceIsRefused(t *testing.T) {
	_, err := hostFilesWithin(t, "/dev/null")
	wantRefused(t, "character device", err, "/dev/null", "character device")
}

func TestHostFileOversizeIsRefused(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, maxHostFile+1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := hostFilesWithin(t, big)
	wantRefused(t, "oversize", err, big, "at most")
}

// endless is a file that keeps growing after its fstat said it was small.
type endless struct{ read int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.read += len(p)
	return len(p), nil
}

// A file that grows past the limit while it is read is cut off one byte
// past the limit and refused.
func TestHostFileGrowingIsCutOff(t *testing.T) {
	e := &endless{}
	_, err := readLimited(e, "/var/log/grows")
	wantRefused(t, "growing file", err, "/var/log/grows")
	if e.read > maxHostFile+1 {
		t.Fatalf("read %d bytes of a growing file, want at most %d", e.read, maxHostFile+1)
	}
}

func TestHostFileNormalAndSkipped(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "hosts")
	if err := os.WriteFile(src, []byte("127.0.0.1 localhost\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	got, err := hostFilesWithin(t, src)
	if err != nil || got != "127.0.0.1 localhost\n" {
		t.Fatalf("regular file: %q, %v", got, err)
	}
	for _, src := range []string{dir, filepath.Join(dir, "missing")} {
		if got, err := hostFilesWithin(t, src); err != nil || got != "" {
			t.Fatalf("%s: %q, %v; want nothing copied and no error", src, got, err)
		}
	}
}
