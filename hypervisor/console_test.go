package hypervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// vmmOpen opens the console FIFO as a VMM does ("-chardev file": a plain
// write-only open), failing the test if that blocks.
func vmmOpen(t *testing.T, fifo string) *os.File {
	t.Helper()
	type res struct {
		f   *os.File
		err error
	}
	ch := make(chan res, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		ch <- res{f, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.f
	case <-time.After(5 * time.Second):
		t.Fatal("the VMM's open of the console FIFO blocks")
		return nil
	}
}

// stream is a hostile console: numbered lines, so that any slice of it shows
// where it came from.
func stream(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "guest flood line %08d \x1b[31mXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n", i)
	}
	return b.Bytes()[:n]
}

// A guest that writes 40 times the cap through the console FIFO leaves a
// log no larger than the cap, holding the newest output, byte for byte.
func TestConsoleFloodStaysUnderCap(t *testing.T) {
	dir := t.TempDir()
	fifo, path := filepath.Join(dir, "console.pipe"), filepath.Join(dir, "console.log")
	const max = MinConsoleLogMax
	c, err := StartConsole(fifo, path, max)
	if err != nil {
		t.Fatal(err)
	}
	// The VMM comes up a little after the copier: no early EOF may end it.
	time.Sleep(50 * time.Millisecond)
	w := vmmOpen(t, fifo)
	flood := stream(40 * max)
	biggest := int64(0)
	for off := 0; off < len(flood); {
		// Uneven writes, as a UART's are.
		n := min(len(flood)-off, 1+off%7919)
		if _, err := w.Write(flood[off : off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
		if fi, err := os.Stat(path); err == nil {
			biggest = max64(biggest, fi.Size())
		}
	}
	w.Close() // the VMM exits
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > max || biggest > max {
		t.Fatalf("console log reached %d bytes (%d at the end); the cap is %d", biggest, len(got), max)
	}
	if len(got) < max/2 {
		t.Fatalf("console log keeps %d bytes, want at least half the cap (%d)", len(got), max/2)
	}
	if !bytes.HasSuffix(flood, got) {
		t.Fatalf("console log is not the newest %d bytes of the stream; it ends %q", len(got), got[max64(0, int64(len(got))-80):])
	}
	if _, err := os.Lstat(fifo); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("FIFO left behind after Close: %v", err)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("rotation temp file left behind: %v", err)
	}
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// A write bigger than half the cap keeps only its own newest half-cap.
func TestRingLogHugeWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	l, err := openRingLog(path, MinConsoleLogMax)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	in := stream(3 * MinConsoleLogMax)
	if err := l.write(in[:100]); err != nil {
		t.Fatal(err)
	}
	if err := l.write(in[100:]); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if len(got) != MinConsoleLogMax/2 || !bytes.HasSuffix(in, got) {
		t.Fatalf("after a huge write the log has %d bytes (suffix of the stream: %v), want the newest %d", len(got), bytes.HasSuffix(in, got), MinConsoleLogMax/2)
	}
}

// A VMM that never opens the FIFO (it failed to start), or that is gone
// while output still sits in the FIFO: Close returns, with the output in the
// log.
func TestConsoleCloseDrains(t *testing.T) {
	dir := t.TempDir()
	fifo, path := filepath.Join(dir, "console.pipe"), filepath.Join(dir, "console.log")
	c, err := StartConsole(fifo, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := vmmOpen(t, fifo)
	w.Write([]byte("Kernel panic - not syncing: last words\n"))
	w.Close()
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeDrain + 2*time.Second):
		t.Fatal("Close does not return")
	}
	if tail, _ := Tail(path, 1); tail != "Kernel panic - not syncing: last words" {
		t.Fatalf("tail after Close = %q", tail)
	}

	c2, err := StartConsole(fifo, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c2.Close()
	if time.Since(start) > time.Second {
		t.Fatalf("Close without a VMM took %s", time.Since(start))
	}
}

// Once the shim is gone (the copier's ends closed), a VMM's writes fail
// instead of blocking the VM.
func TestConsoleNoReaderDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "console.pipe")
	c, err := StartConsole(fifo, filepath.Join(dir, "console.log"), 0)
	if err != nil {
		t.Fatal(err)
	}
	w := vmmOpen(t, fifo)
	defer w.Close()
	// As if the shim died: its ends of the FIFO close.
	c.hold.Close()
	c.r.Close()
	<-c.done
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, 1<<20))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, unix.EPIPE) {
			t.Fatalf("write without a reader: %v, want EPIPE", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a VMM's console write blocks once nobody reads")
	}
}

func TestConsoleCapBounds(t *testing.T) {
	dir := t.TempDir()
	for _, max := range []int64{1, MinConsoleLogMax - 1, MaxConsoleLogMax + 1} {
		_, err := StartConsole(filepath.Join(dir, "p"), filepath.Join(dir, "l"), max)
		if !errdefs.IsInvalidArgument(err) {
			t.Fatalf("cap %d: err = %v, want InvalidArgument", max, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused console left %d files", len(ents))
	}
}
