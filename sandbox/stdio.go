package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/containerd/log"
)

// streamOpener opens one stdio stream of a guest process.
type streamOpener interface {
	OpenStream(ctx context.Context, containerID, execID, kind string) (net.Conn, error)
}

// stdioPlaceholder marks a stdio field of a task request as connected to a
// stream; the guest replaces it with its own FIFO.
const stdioPlaceholder = "stream"

// pendingStdio is connectStdio running in the background. A container's
// streams need neither its rootfs nor its guest bundle, so CreateTask dials
// them while those are made: under TCG each dial is a vsock round trip of
// 5-15 ms into the guest, one after the other.
type pendingStdio struct {
	done                  chan struct{}
	stdin, stdout, stderr string
	abort                 func()
	err                   error
	took                  time.Duration // dial start → every stream open
}

// dialStdio starts connectStdio; wait returns its results.
func dialStdio(ctx context.Context, s streamOpener, containerID, execID string, pio IO) *pendingStdio {
	p := &pendingStdio{done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(p.done)
		p.stdin, p.stdout, p.stderr, p.abort, p.err = connectStdio(ctx, s, containerID, execID, pio)
		p.took = time.Since(start)
	}()
	return p
}

// wait blocks until every stream is open (or one failed, the others then
// closed). A failure after it closes them with cancel.
func (p *pendingStdio) wait() (stdin, stdout, stderr string, err error) {
	<-p.done
	return p.stdin, p.stdout, p.stderr, p.err
}

// cancel closes the streams of a create that failed before its task
// request: now when the dials are done, else as soon as they are, without
// holding up the error. The guest releases a process's streams when the
// host closes an output stream before the process exists.
func (p *pendingStdio) cancel() {
	closeAll := func() {
		if p.err == nil {
			p.abort()
		}
	}
	select {
	case <-p.done:
		closeAll()
	default:
		go func() {
			<-p.done
			closeAll()
		}()
	}
}

// hasOutput says whether pio asks for an output stream: only those tell the
// guest, when the host closes them early, that the process will not come.
func (pio IO) hasOutput() bool {
	return pio.Stdout != nil || (pio.Stderr != nil && !pio.Terminal)
}

// connectStdio opens the guest streams for the process's host-side stdio and
// starts copying. It returns the stdio fields for the guest request and an
// abort func that closes the streams if that request fails. On error every
// stream already opened is closed.
func connectStdio(ctx context.Context, s streamOpener, containerID, execID string, pio IO) (stdin, stdout, stderr string, abort func(), err error) {
	if execID == "" {
		execID = "-"
	}
	var opened []net.Conn
	defer func() {
		if err != nil {
			for _, c := range opened {
				c.Close()
			}
		}
	}()
	open := func(kind string) (net.Conn, error) {
		c, err := s.OpenStream(ctx, containerID, execID, kind)
		if err != nil {
			return nil, fmt.Errorf("open %s stream of %s/%s: %w", kind, containerID, execID, err)
		}
		opened = append(opened, c)
		return c, nil
	}
	var in, out, errc net.Conn
	if pio.Stdin != nil {
		if in, err = open("stdin"); err != nil {
			return
		}
		stdin = stdioPlaceholder
	}
	if pio.Stdout != nil {
		if out, err = open("stdout"); err != nil {
			return
		}
		stdout = stdioPlaceholder
	}
	if pio.Stderr != nil && !pio.Terminal {
		if errc, err = open("stderr"); err != nil {
			return
		}
		stderr = stdioPlaceholder
	}
	logger := log.G(ctx).WithField("container", containerID).WithField("exec", execID)
	if in != nil {
		go func() {
			if _, err := io.Copy(in, pio.Stdin); err != nil {
				logger.WithError(err).Debug("stdin copy ended")
			}
			// The guest sees EOF on the process's stdin.
			if cw, ok := in.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			} else {
				in.Close()
			}
		}()
	}
	var wg sync.WaitGroup
	pump := func(dst io.WriteCloser, src net.Conn, kind string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := io.Copy(dst, src); err != nil {
				logger.WithError(err).Debugf("%s copy ended", kind)
			}
			src.Close()
			dst.Close()
		}()
	}
	if out != nil {
		pump(pio.Stdout, out, "stdout")
	}
	if errc != nil {
		pump(pio.Stderr, errc, "stderr")
	}
	go func() {
		wg.Wait()
		if in != nil {
			in.Close()
		}
	}()
	abort = func() {
		for _, c := range opened {
			c.Close()
		}
	}
	return stdin, stdout, stderr, abort, nil
}
