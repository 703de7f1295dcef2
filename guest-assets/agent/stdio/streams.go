// Package stdio connects guest process stdio to host streams. The host opens
// one vsock connection per stream (api.StreamPort) before the task request
// that names it; the guest answers the handshake, makes a FIFO for the
// stream, and the task wrapper puts the FIFO's path into the request. Each
// stream is copied on its own, so a slow reader only slows its own stream.
package stdio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"github.com/containerd/log"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// HandshakeTimeout bounds how long a new connection may take to send its
// header line.
const HandshakeTimeout = 10 * time.Second

// CloseIOFunc closes the guest side of a process's stdin (the task service's
// CloseIO), so that the process sees EOF once the host half-closed stdin.
type CloseIOFunc func(ctx context.Context, containerID, execID string) error

// CheckFunc asks the agent policy about a new stream. An error refuses the
// handshake (ERR); allowed=false answers OK but passes no data, so that a
// denied read looks like silence rather than a failure.
type CheckFunc func(ctx context.Context, h api.StreamHeader) (allowed bool, err error)

type procKey struct{ cid, exec string }

// proc holds the streams of one process.
type proc struct {
	dir     string
	ctx     context.Context
	cancel  context.CancelFunc
	started chan struct{} // closed once the process owns its stdio
	once    sync.Once
	// claimed is set once a Create or Exec naming these streams went to
	// the task service; from then on that request's outcome (or Delete)
	// releases them, not a host connection that ends early.
	claimed atomic.Bool
	paths   map[string]string // kind → fifo path
	stdin   []io.Closer       // the stdin conn and fifo, closed at release
	outputs []chan struct{}   // closed when an output pump finished
	closers []io.Closer       // output conns and fifos, closed if a pump hangs
}

// releaseGrace is how long released output streams may keep copying what
// the process wrote before it exited.
const releaseGrace = 5 * time.Second

// Streams is the registry of host streams, keyed by container, exec and
// kind. It is safe for concurrent use.
type Streams struct {
	root    string
	closeIO CloseIOFunc
	check   CheckFunc
	ctx     context.Context

	mu    sync.Mutex
	procs map[procKey]*proc
}

// New returns a registry that makes FIFOs under root. check may be nil
// (every stream allowed).
func New(ctx context.Context, root string, closeIO CloseIOFunc, check CheckFunc) *Streams {
	return &Streams{root: root, closeIO: closeIO, check: check, ctx: ctx, procs: map[procKey]*proc{}}
}

func execDir(execID string) string {
	if execID == "" {
		return "init"
	}
	return "exec-" + execID
}

// Serve accepts stream connections until l is closed. Running out of fds
// or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) is waited out, with a log
// line, rather than ending the port for the rest of the pod's life.
func (s *Streams) Serve(l net.Listener) error {
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if !acceptRetryable(err) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.G(s.ctx).WithError(err).Warnf("stream port: accept failed; retrying in %s", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go s.handle(c)
	}
}

func acceptRetryable(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// readLine reads up to and including '\n' one byte at a time, so that no
// stream bytes after the header are consumed. On error it returns the bytes
// read so far.
func readLine(r io.Reader) (string, error) {
	var b [1]byte
	buf := make([]byte, 0, 64)
	for len(buf) < api.MaxStreamHeader {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return string(buf), err // what came before, for the log
		}
		buf = append(buf, b[0])
		if b[0] == '\n' {
			return string(buf), nil
		}
	}
	return "", fmt.Errorf("stream header longer than %d bytes: %w", api.MaxStreamHeader, errdefs.ErrInvalidArgument)
}

func (s *Streams) handle(c net.Conn) {
	c.SetDeadline(time.Now().Add(HandshakeTimeout))
	line, err := readLine(c)
	var h api.StreamHeader
	if err == nil {
		h, err = api.ParseStreamHeader(line)
	}
	allowed := true
	if err == nil && s.check != nil {
		allowed, err = s.check(s.ctx, h)
	}
	if err == nil {
		err = s.register(h, c, allowed)
	}
	if err != nil {
		// A host that hangs up before its header asked for nothing.
		if line == "" && errors.Is(err, io.EOF) {
			log.G(s.ctx).Debug("stream connection closed before its header")
		} else {
			log.G(s.ctx).WithError(err).Warn("stream refused")
		}
		fmt.Fprintf(c, "ERR %s\n", oneLine(err.Error()))
		c.Close()
		return
	}
}

func oneLine(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == '\n' || b[i] == '\r' {
			b[i] = ' '
		}
	}
	return string(b)
}

// register makes the FIFO for h, answers OK and starts copying.
func (s *Streams) register(h api.StreamHeader, c net.Conn, allowed bool) error {
	key := procKey{h.ContainerID, h.ExecID}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[key]
	if p == nil {
		dir := filepath.Join(s.root, h.ContainerID, execDir(h.ExecID))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("stream directory: %w", err)
		}
		ctx, cancel := context.WithCancel(s.ctx)
		p = &proc{dir: dir, ctx: ctx, cancel: cancel, started: make(chan struct{}), paths: map[string]string{}}
		s.procs[key] = p
	}
	if _, dup := p.paths[h.Kind]; dup {
		return fmt.Errorf("%s stream of %s/%s already open: %w", h.Kind, h.ContainerID, execName(h.ExecID), errdefs.ErrAlreadyExists)
	}
	path := filepath.Join(p.dir, h.Kind)
	if err := syscall.Mkfifo(path, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("make fifo for %s stream: %w", h.Kind, err)
	}
	var flag int
	if h.Kind == api.StreamStdin {
		flag = syscall.O_WRONLY | syscall.O_NONBLOCK
	} else {
		flag = syscall.O_RDONLY | syscall.O_NONBLOCK
	}
	// O_NONBLOCK here means "do not wait for the other side": the open
	// completes in the background once the task service opens its end, and
	// Close cancels it if that never happens.
	f, err := fifo.OpenFifo(p.ctx, path, flag, 0)
	if err != nil {
		return fmt.Errorf("open fifo for %s stream: %w", h.Kind, err)
	}
	if _, err := io.WriteString(c, "OK\n"); err != nil {
		f.Close()
		return fmt.Errorf("answer handshake: %w", err)
	}
	c.SetDeadline(time.Time{})
	p.paths[h.Kind] = path
	if h.Kind == api.StreamStdin {
		p.stdin = append(p.stdin, f, c)
		go s.pumpStdin(h, p, c, f, allowed)
	} else {
		done := make(chan struct{})
		p.outputs = append(p.outputs, done)
		p.closers = append(p.closers, f, c)
		go func() {
			defer close(done)
			pumpOutput(p.ctx, h, c, f, allowed)
		}()
		go s.watchHost(key, p, c)
	}
	return nil
}

func execName(id string) string {
	if id == "" {
		return "init"
	}
	return id
}

// pumpStdin copies host bytes into the FIFO; on the host's half-close it
// closes the FIFO and, once the process owns its stdin, asks the task
// service to close its end too.
func (s *Streams) pumpStdin(h api.StreamHeader, p *proc, c net.Conn, f io.WriteCloser, allowed bool) {
	var dst io.Writer = f
	if !allowed {
		dst = io.Discard
	}
	_, err := io.Copy(dst, c)
	f.Close()
	if err != nil && p.ctx.Err() == nil {
		log.G(p.ctx).WithError(err).WithField("id", h.ContainerID).Debug("stdin stream ended")
	}
	select {
	case <-p.started:
	case <-p.ctx.Done():
		return
	}
	if s.closeIO != nil {
		if err := s.closeIO(p.ctx, h.ContainerID, h.ExecID); err != nil && !errdefs.IsNotFound(err) {
			log.G(p.ctx).WithError(err).WithField("id", h.ContainerID).Warn("close stdin after host EOF")
		}
	}
}

// pumpOutput copies the FIFO to the host. If the host stops reading, the
// rest is discarded so that the process never blocks on a full pipe.
func pumpOutput(ctx context.Context, h api.StreamHeader, c net.Conn, f io.ReadCloser, allowed bool) {
	defer f.Close()
	buf := make([]byte, 32<<10)
	var w io.Writer = c
	if !allowed {
		w = io.Discard
	}
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				log.G(ctx).WithError(werr).WithField("id", h.ContainerID).Debugf("%s stream: host stopped reading; discarding", h.Kind)
				w = io.Discard
			}
		}
		if err != nil {
			break
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.Close()
}

// watchHost notices a host that closes an output stream before the process
// exists (its Create or Exec failed or was refused before reaching the task
// service) and releases the process's streams, so nothing waits for a FIFO
// writer that will never come. The host never writes on output streams.
func (s *Streams) watchHost(key procKey, p *proc, c net.Conn) {
	var b [1]byte
	c.Read(b[:])
	if p.claimed.Load() {
		return
	}
	select {
	case <-p.started:
		return
	default:
	}
	s.mu.Lock()
	current := s.procs[key] == p
	if current {
		delete(s.procs, key)
	}
	s.mu.Unlock()
	if current {
		p.release()
	}
}

// Path returns the FIFO of a registered stream.
func (s *Streams) Path(containerID, execID, kind string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[procKey{containerID, execID}]
	if p == nil {
		return "", false
	}
	path, ok := p.paths[kind]
	return path, ok
}

// Claim records that a Create or Exec naming the process's streams is going
// to the task service: an output connection that ends before the process
// starts no longer releases the FIFOs the task service is about to open.
func (s *Streams) Claim(containerID, execID string) {
	s.mu.Lock()
	p := s.procs[procKey{containerID, execID}]
	s.mu.Unlock()
	if p != nil {
		p.claimed.Store(true)
	}
}

// Started records that the process owns its stdio (after task Create for
// init, Start for an exec), so a host half-close of stdin may now close it.
func (s *Streams) Started(containerID, execID string) {
	s.mu.Lock()
	p := s.procs[procKey{containerID, execID}]
	s.mu.Unlock()
	if p != nil {
		p.once.Do(func() { close(p.started) })
	}
}

// Release closes the streams of one process and removes its FIFOs.
func (s *Streams) Release(containerID, execID string) {
	s.mu.Lock()
	p := s.procs[procKey{containerID, execID}]
	delete(s.procs, procKey{containerID, execID})
	s.mu.Unlock()
	if p != nil {
		p.release()
	}
}

// ReleaseContainer releases every process's streams of a container.
func (s *Streams) ReleaseContainer(containerID string) {
	s.mu.Lock()
	var ps []*proc
	for k, p := range s.procs {
		if k.cid == containerID {
			ps = append(ps, p)
			delete(s.procs, k)
		}
	}
	s.mu.Unlock()
	for _, p := range ps {
		p.release()
	}
	os.RemoveAll(filepath.Join(s.root, containerID))
}

// release cancels FIFO opens that never completed, closes stdin, and lets
// output pumps finish copying what is left (they end when the task service
// closes its write ends), closing them by force after releaseGrace.
func (p *proc) release() {
	p.cancel()
	for _, c := range p.stdin {
		c.Close()
	}
	os.RemoveAll(p.dir)
	if len(p.outputs) == 0 {
		return
	}
	go func() {
		deadline := time.NewTimer(releaseGrace)
		defer deadline.Stop()
		for _, done := range p.outputs {
			select {
			case <-done:
			case <-deadline.C:
				for _, c := range p.closers {
					c.Close()
				}
				return
			}
		}
	}()
}
