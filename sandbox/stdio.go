package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/containerd/log"
)

// streamOpener opens one stdio stream of a guest process.
type streamOpener interface {
	OpenStream(ctx context.Context, containerID, execID, kind string) (net.Conn, error)
}

// stdioPlaceholder marks a stdio field of a task request as connected to a
// stream; the guest replaces it with its own FIFO.
const stdioPlaceholder = "stream"

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
