package hypervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Bounds of Config.ConsoleLogMax. The log keeps between half of it and all
// of it; below the minimum a boot error's tail would not fit.
const (
	DefaultConsoleLogMax = 4 << 20
	MinConsoleLogMax     = 64 << 10
	MaxConsoleLogMax     = 1 << 30
)

// consoleBuf is the copier's read buffer: console output arrives a few
// bytes at a time (each byte is an emulated UART write), so a small buffer
// is enough and a flood is read in chunks of this size.
const consoleBuf = 16 << 10

// Console copies a guest's serial output from a FIFO, which the VMM writes as
// if it were a file, into a log of bounded size.
//
// Why this design: a VMM writing the console straight into a file grows it
// without end, and /run is RAM, so a guest flooding its serial port could
// fill the host's memory. QEMU's ringbuf chardev would bound it in QEMU, but
// its content dies with QEMU, and the console's tail is needed most after
// the VMM exited (a panic, a failed boot). A FIFO leaves the VMM side
// unchanged for QEMU ("-chardev file") and Cloud Hypervisor ("serial File")
// alike, keeps the cap in the shim, and costs one goroutine and one read and
// one write per chunk of output. The VM never waits on an absent reader:
// the copier reads for as long as the shim lives, and once the shim is gone
// the VMM's writes fail with EPIPE and the output is dropped.
//
// The log is rotated, not trimmed in place: when a write would pass the cap,
// the newest half is copied (in the kernel) into a new file renamed over the
// log, so a reader always sees a whole file that ends with the newest output.
type Console struct {
	fifo string
	r    *os.File // read end, non-blocking (the runtime poller waits)
	hold *os.File // a write end held until Close: no EOF before the VMM opens the FIFO
	log  *ringLog
	done chan struct{}
	once sync.Once
}

// StartConsole creates the FIFO at fifo (replacing whatever is there), the
// log at path, and starts copying. max is the log's cap in bytes
// (MinConsoleLogMax-MaxConsoleLogMax; 0 means DefaultConsoleLogMax). Close
// stops it; on error nothing is left behind.
func StartConsole(fifo, path string, limit int64) (_ *Console, retErr error) {
	if limit == 0 {
		limit = DefaultConsoleLogMax
	}
	if limit < MinConsoleLogMax || limit > MaxConsoleLogMax {
		return nil, fmt.Errorf("console log cap %d bytes: want %d-%d: %w", limit, MinConsoleLogMax, MaxConsoleLogMax, errdefs.ErrInvalidArgument)
	}
	_ = os.Remove(fifo)
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		return nil, fmt.Errorf("console: %w", &os.PathError{Op: "mkfifo", Path: fifo, Err: err})
	}
	c := &Console{fifo: fifo, done: make(chan struct{})}
	defer func() {
		if retErr != nil {
			c.closeFiles()
			os.Remove(fifo)
		}
	}()
	var err error
	if c.r, err = os.OpenFile(fifo, os.O_RDONLY|unix.O_NONBLOCK, 0); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	if c.hold, err = os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK, 0); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	if c.log, err = openRingLog(path, limit); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	go c.copy()
	return c, nil
}

func (c *Console) copy() {
	defer close(c.done)
	buf := make([]byte, consoleBuf)
	for {
		n, err := c.r.Read(buf)
		if n > 0 {
			// A log that cannot be written (the host's /run is full) still
			// drains the FIFO: the VM must not stall on it.
			_ = c.log.write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// closeDrain bounds how long Close waits for output still in the FIFO when
// a writer other than the copier's own is still open (a VMM not yet gone).
const closeDrain = 2 * time.Second

// Close stops copying once the VMM's last output is in the log (the VMM
// should have exited), removes the FIFO and keeps the log. Idempotent.
func (c *Console) Close() error {
	if c == nil {
		return nil
	}
	c.once.Do(func() {
		c.hold.Close()
		select {
		case <-c.done:
		case <-time.After(closeDrain):
			_ = c.r.SetReadDeadline(time.Now())
			<-c.done
		}
		c.closeFiles()
		os.Remove(c.fifo)
	})
	return nil
}

func (c *Console) closeFiles() {
	for _, f := range []*os.File{c.r, c.hold} {
		if f != nil {
			f.Close()
		}
	}
	if c.log != nil {
		c.log.close()
	}
}

// ringLog is an append-only file of at most max bytes that keeps its newest
// bytes. Only the copier goroutine writes it.
type ringLog struct {
	path string
	max  int64
	f    *os.File
	size int64
	err  error // sticky: a log that failed once stays closed
}

func openRingLog(path string, max int64) (*ringLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &ringLog{path: path, max: max, f: f}, nil
}

func (l *ringLog) write(p []byte) error {
	if l.err != nil {
		return l.err
	}
	if l.size+int64(len(p)) > l.max {
		l.err = l.rotate(p)
		return l.err
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	l.err = err
	return err
}

// rotate replaces the log with its newest max/2 bytes followed by p (or
// only p's newest max/2 bytes when p alone is that long).
func (l *ringLog) rotate(p []byte) (retErr error) {
	keep := l.max / 2
	if int64(len(p)) > keep {
		p = p[int64(len(p))-keep:]
	}
	old := min(keep-int64(len(p)), l.size)
	tmp := l.path + ".tmp"
	nf, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			nf.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := l.f.Seek(l.size-old, io.SeekStart); err != nil {
		return err
	}
	// An *os.File reading through a LimitedReader lets io.Copy use
	// copy_file_range: the kept half never passes through the shim.
	if n, err := io.Copy(nf, &io.LimitedReader{R: l.f, N: old}); err != nil || n != old {
		return errors.Join(fmt.Errorf("console log rotation copied %d of %d bytes", n, old), err)
	}
	if _, err := nf.Write(p); err != nil {
		return err
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return err
	}
	l.f.Close()
	l.f, l.size = nf, old+int64(len(p))
	return nil
}

func (l *ringLog) close() {
	if l.f != nil {
		l.f.Close()
	}
}
