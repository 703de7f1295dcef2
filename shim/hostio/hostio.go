// Package hostio opens the host side of a process's stdio the way
// containerd's runc shim does: FIFOs (the default), a `binary://` logging
// driver, a `file://` log file, and terminals. The guest owns the pty, so on
// the host a terminal is just a stdin stream and one output stream.
//
// The result is handed to the sandbox as a sandbox.IO. The sandbox copies the
// guest streams into Stdout/Stderr and closes each when its guest stream ends;
// it reads Stdin until EOF and then half-closes the guest stream.
package hostio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"github.com/containerd/log"

	"github.com/coco-runtime/coco/sandbox"
)

// Process is the host stdio of one container process or exec.
//
// Lifecycle: Open → IO() handed to the sandbox → CloseStdin (CloseIO) any
// number of times → Drain waits for the output copies → Close releases the
// FIFOs, files and logging binary (idempotent).
type Process struct {
	terminal bool
	stdin    *stdinReader
	stdout   *outWriter
	stderr   *outWriter

	closeOnce sync.Once
	closers   []func() error
}

// Open opens the host stdio described by st for process id.
func Open(ctx context.Context, id string, st stdio.Stdio) (_ *Process, retErr error) {
	p := &Process{terminal: st.Terminal}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	if st.Stdin != "" {
		f, err := fifo.OpenFifo(context.WithoutCancel(ctx), st.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open stdin fifo %q: %w", st.Stdin, err)
		}
		p.stdin = &stdinReader{r: f, closed: make(chan struct{})}
		p.closers = append(p.closers, f.Close)
	}
	if st.Stdout == "" && st.Stderr == "" {
		return p, nil
	}
	uri, err := parseURI(st.Stdout, st.Stderr)
	if err != nil {
		return nil, err
	}
	switch uri.Scheme {
	case "fifo":
		if err := p.openPaths(ctx, st.Stdout, st.Stderr); err != nil {
			return nil, err
		}
	case "file":
		if uri.Host != "" {
			return nil, fmt.Errorf("stdout %q: a file:// URI takes an absolute path and no host (file:///path): %w",
				st.Stdout, errdefs.ErrInvalidArgument)
		}
		if err := p.openFile(uri.Path); err != nil {
			return nil, err
		}
	case "binary", "binary-v2":
		if err := p.openBinary(ctx, id, uri); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("stdout %q: unknown stdio scheme %q (supported: fifo, file, binary, binary-v2): %w",
			st.Stdout, uri.Scheme, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// parseURI reads the scheme the way the runc shim does: from stdout, or from
// stderr when stdout is empty; a bare path is a FIFO.
func parseURI(stdout, stderr string) (*url.URL, error) {
	s := stdout
	if s == "" {
		s = stderr
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("stdio uri %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	if u.Scheme == "" {
		u.Scheme = "fifo"
	}
	return u, nil
}

// openPaths opens stdout and stderr as FIFOs, or as files appended to when a
// path is not a FIFO (runc shim behaviour).
func (p *Process) openPaths(ctx context.Context, stdout, stderr string) error {
	var shared *outWriter
	for _, s := range []struct {
		path string
		dst  **outWriter
	}{{stdout, &p.stdout}, {stderr, &p.stderr}} {
		if s.path == "" {
			continue
		}
		isFifo, err := fifo.IsFifo(s.path)
		if err != nil {
			return fmt.Errorf("stdio %q: %w", s.path, err)
		}
		if !isFifo {
			if shared != nil && stdout == stderr {
				shared.refs++
				*s.dst = shared
				continue
			}
			f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return fmt.Errorf("open stdio file %q: %w", s.path, err)
			}
			w := newOutWriter(f, nil)
			p.closers = append(p.closers, w.closeUnderlying)
			*s.dst = w
			shared = w
			continue
		}
		fw, err := fifo.OpenFifo(ctx, s.path, syscall.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("open fifo %q for writing: %w", s.path, err)
		}
		// Holding a read end too keeps writes from failing with EPIPE while
		// containerd reconnects to the FIFO (e.g. after a restart).
		fr, err := fifo.OpenFifo(ctx, s.path, syscall.O_RDONLY, 0)
		if err != nil {
			fw.Close()
			return fmt.Errorf("open fifo %q for reading: %w", s.path, err)
		}
		w := newOutWriter(fw, fr)
		p.closers = append(p.closers, w.closeUnderlying)
		*s.dst = w
	}
	return nil
}

// openFile appends stdout and stderr to one log file.
func (p *Process) openFile(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("file:// stdio needs an absolute path, got %q: %w", path, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	w := newOutWriter(f, nil)
	p.closers = append(p.closers, w.closeUnderlying)
	p.stdout = w
	if !p.terminal {
		w.refs++
		p.stderr = w
	}
	return nil
}

// openBinary starts the logging binary with containerd's own helper; its
// pipe write ends become the process's outputs.
func (p *Process) openBinary(ctx context.Context, id string, uri *url.URL) error {
	bio, err := process.NewBinaryIO(ctx, id, uri)
	if err != nil {
		return fmt.Errorf("start logging binary %q: %w", uri.Path, err)
	}
	// Close stops the logger (SIGTERM, then kill after a grace period).
	p.closers = append(p.closers, func() error {
		if err := bio.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			return err
		}
		return nil
	})
	// The logger holds the read ends now; drop ours.
	if err := bio.(interface{ CloseAfterStart() error }).CloseAfterStart(); err != nil {
		return err
	}
	// The helper hands its pipes to an exec.Cmd; borrow them from one.
	var cmd exec.Cmd
	bio.Set(&cmd)
	if f, ok := cmd.Stdout.(*os.File); ok && f != nil {
		p.stdout = newOutWriter(f, nil)
	}
	if f, ok := cmd.Stderr.(*os.File); ok && f != nil && !p.terminal {
		p.stderr = newOutWriter(f, nil)
	}
	return nil
}

// IO is what the sandbox copies to and from.
func (p *Process) IO() sandbox.IO {
	var sio sandbox.IO
	sio.Terminal = p.terminal
	if p.stdin != nil {
		sio.Stdin = p.stdin
	}
	if p.stdout != nil {
		sio.Stdout = p.stdout
	}
	if p.stderr != nil && !p.terminal {
		sio.Stderr = p.stderr
	}
	return sio
}

// CloseStdin ends the process's stdin: the sandbox sees EOF after whatever
// it has already read, and half-closes the guest stream. Like runc's shim,
// closing twice or closing a process without stdin is not an error.
func (p *Process) CloseStdin() {
	if p.stdin != nil {
		p.stdin.closeRead()
	}
}

// Drain waits until the sandbox has closed every output stream (all guest
// output has been written to the host side) or ctx is done.
func (p *Process) Drain(ctx context.Context) error {
	for _, w := range []*outWriter{p.stdout, p.stderr} {
		if w == nil {
			continue
		}
		select {
		case <-w.done:
		case <-ctx.Done():
			return fmt.Errorf("waiting for process output to drain: %w", ctx.Err())
		}
	}
	return nil
}

// Close releases everything Open acquired.
func (p *Process) Close() error {
	var errs []error
	p.closeOnce.Do(func() {
		if p.stdin != nil {
			p.stdin.closeRead()
		}
		for i := len(p.closers) - 1; i >= 0; i-- {
			if err := p.closers[i](); err != nil {
				errs = append(errs, err)
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		log.L.WithError(err).Debug("closing host stdio")
		return err
	}
	return nil
}

// stdinReader returns io.EOF once CloseIO was called, also to a Read that
// was blocked in the FIFO when it happened.
type stdinReader struct {
	r      io.ReadCloser
	once   sync.Once
	closed chan struct{}
}

func (s *stdinReader) Read(b []byte) (int, error) {
	select {
	case <-s.closed:
		return 0, io.EOF
	default:
	}
	n, err := s.r.Read(b)
	if err != nil {
		select {
		case <-s.closed:
			return n, io.EOF
		default:
		}
	}
	return n, err
}

func (s *stdinReader) closeRead() {
	s.once.Do(func() {
		close(s.closed)
		s.r.Close() // unblocks a pending Read
	})
}

// Close is called by the sandbox when it is done reading.
func (s *stdinReader) Close() error {
	s.closeRead()
	return nil
}

// outWriter tracks when the sandbox is done writing. refs counts the
// process streams sharing it (stdout and stderr into one file).
type outWriter struct {
	mu     sync.Mutex
	w      io.WriteCloser
	keep   io.Closer // FIFO read end held open, closed with w
	refs   int
	done   chan struct{}
	closed bool
}

func newOutWriter(w io.WriteCloser, keep io.Closer) *outWriter {
	return &outWriter{w: w, keep: keep, refs: 1, done: make(chan struct{})}
}

func (o *outWriter) Write(b []byte) (int, error) {
	// Not under mu: a Write blocked on a full FIFO must not stop Close,
	// which unblocks it by closing the FIFO.
	o.mu.Lock()
	w := o.w
	o.mu.Unlock()
	return w.Write(b)
}

// Close marks one stream finished; the last one closes the destination.
func (o *outWriter) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.refs--
	if o.refs > 0 {
		return nil
	}
	o.closed = true
	close(o.done)
	return o.closeLocked()
}

func (o *outWriter) closeUnderlying() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.closed = true
		close(o.done)
	}
	return o.closeLocked()
}

func (o *outWriter) closeLocked() error {
	var errs []error
	if o.w != nil {
		if err := o.w.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
		o.w = nopWriteCloser{}
	}
	if o.keep != nil {
		if err := o.keep.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
		o.keep = nil
	}
	return errors.Join(errs...)
}

// nopWriteCloser stands in after close so that a late Write fails cleanly.
type nopWriteCloser struct{}

func (nopWriteCloser) Write([]byte) (int, error) { return 0, os.ErrClosed }
func (nopWriteCloser) Close() error              { return nil }
