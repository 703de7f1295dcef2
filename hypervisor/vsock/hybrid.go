// Package vsock reaches a guest's vsock ports from the host, either through
// kernel vhost-vsock (AF_VSOCK) or through "hybrid vsock": a unix socket
// served by the VMM (Cloud Hypervisor) or by the back-end of QEMU's
// vhost-user-vsock-pci (package vhostuser in the shim, or vhost-device-vsock),
// where the client writes "CONNECT <port>\n", reads
// "OK <host-port>\n" and then owns a raw byte stream to the guest port.
package vsock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Dialer holds the retry policy shared by DialHybrid and DialVhost. The zero
// value uses the defaults below.
type Dialer struct {
	// MinBackoff is the first pause between attempts (default 20ms); it
	// doubles up to MaxBackoff (default 100ms). The pause is what a caller
	// loses once the guest starts listening (measured: ~0.4s of boot with a
	// 500ms cap), while a refused attempt costs the guest one RST, so the
	// cap stays short.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// HandshakeTimeout bounds one CONNECT/OK exchange (default 5s). A request
	// sent before the guest's vsock driver is up may never be answered; a
	// fresh attempt after the timeout recovers from that.
	HandshakeTimeout time.Duration
}

const maxReplyLen = 64 // "OK 4294967295\n" is 14 bytes; anything longer is garbage

// DialHybrid connects to guest port through the hybrid-vsock unix socket at
// socketPath, retrying while the endpoint is not ready until ctx is done.
func DialHybrid(ctx context.Context, socketPath string, port uint32) (net.Conn, error) {
	return Dialer{}.DialHybrid(ctx, socketPath, port)
}

// DialHybrid is the package-level DialHybrid with d's retry policy.
func (d Dialer) DialHybrid(ctx context.Context, socketPath string, port uint32) (net.Conn, error) {
	what := fmt.Sprintf("hybrid vsock %s port %d", socketPath, port)
	return d.retry(ctx, what, func(ctx context.Context) (net.Conn, error) {
		return d.hybridOnce(ctx, socketPath, port)
	})
}

// hybridOnce makes one attempt. Errors that mean "not ready yet" are
// returned wrapped in notReady; anything else ends the retry loop.
func (d Dialer) hybridOnce(ctx context.Context, socketPath string, port uint32) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "unix", socketPath)
	if err != nil {
		// Something other than a socket at the path will never become
		// ready: say so now rather than at the deadline.
		if fi, serr := os.Stat(socketPath); serr == nil && fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s is not a unix socket (%s)", socketPath, fi.Mode().Type())
		}
		if transient(err) {
			return nil, notReady{err}
		}
		return nil, err
	}
	uc := c.(*net.UnixConn)
	hs := d.HandshakeTimeout
	if hs <= 0 {
		hs = 5 * time.Second
	}
	deadline := time.Now().Add(hs)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = uc.SetDeadline(deadline)
	// Cut the handshake short if ctx is cancelled, unless the socket has
	// been handed to linger by then.
	var mu sync.Mutex
	lingering := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !lingering {
			_ = uc.SetDeadline(time.Unix(1, 0))
		}
	})
	defer stop()

	if _, err := fmt.Fprintf(uc, "CONNECT %d\n", port); err != nil {
		uc.Close()
		return nil, classify(err)
	}
	line, err := readLine(uc)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The request is out and the guest may still accept it.
			mu.Lock()
			lingering = true
			mu.Unlock()
			linger(uc)
		} else {
			uc.Close()
		}
		return nil, classify(err)
	}
	if _, err := parseOK(line); err != nil {
		uc.Close()
		return nil, err
	}
	if !stop() {
		uc.Close()
		return nil, ctx.Err()
	}
	_ = uc.SetDeadline(time.Time{})
	return uc, nil
}

// lingerLimit bounds how long linger keeps an unanswered request open: a
// guest that takes longer to accept a connection is hung.
const lingerLimit = 2 * time.Minute

// linger closes the socket of a CONNECT the dialler gave up on only once
// the endpoint has answered it (or lingerLimit passed). vhost-device-vsock
// 0.3 writes the guest's acceptance ("OK <port>") to the host socket with
// an unwrap: if the host has closed it, the write fails with EPIPE, its
// vring worker thread panics, and every connection of the VM stops for
// good. A CreateContainer canceled while its stdio streams were being
// dialled hung the pod's guest that way (issue 27).
func linger(uc *net.UnixConn) {
	_ = uc.SetDeadline(time.Now().Add(lingerLimit))
	go func() {
		defer uc.Close()
		var b [maxReplyLen]byte
		_, _ = uc.Read(b[:]) // the answer, EOF (refused) or the limit
	}()
}

// readLine reads up to and including '\n' one byte at a time, so that no
// byte of the stream that follows is consumed and the caller can hand out
// the raw connection.
func readLine(r io.Reader) (string, error) {
	var buf [maxReplyLen]byte
	for n := 0; n < len(buf); {
		m, err := r.Read(buf[n : n+1])
		if m == 1 {
			if buf[n] == '\n' {
				return string(buf[:n]), nil
			}
			n++
			continue
		}
		if err != nil {
			if n > 0 && errors.Is(err, io.EOF) {
				return "", fmt.Errorf("reply %q cut short: %w", buf[:n], io.ErrUnexpectedEOF)
			}
			return "", err
		}
	}
	return "", fmt.Errorf("reply longer than %d bytes without a newline: %q", maxReplyLen, buf[:])
}

// parseOK accepts "OK <u32>" and returns the host-side port.
func parseOK(line string) (uint32, error) {
	rest, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return 0, fmt.Errorf("unexpected reply %q, want \"OK <port>\"", line)
	}
	p, err := strconv.ParseUint(rest, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("unexpected reply %q: bad port: %w", line, err)
	}
	return uint32(p), nil
}

// notReady marks an attempt that failed because the other end is not up yet.
type notReady struct{ err error }

func (n notReady) Error() string { return n.err.Error() }
func (n notReady) Unwrap() error { return n.err }

// classify turns handshake I/O errors into notReady where retrying helps:
// the endpoint closes the connection (EOF, ECONNRESET) when the guest has no
// listener yet, and a timeout means the request was never answered.
func classify(err error) error {
	var ne net.Error
	if transient(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return notReady{err}
	}
	return err
}

// transient reports errno values that mean "the socket or the guest is not
// there yet" for both unix and AF_VSOCK sockets.
func transient(err error) bool {
	for _, e := range []syscall.Errno{syscall.ENOENT, syscall.ECONNREFUSED, syscall.ECONNRESET,
		syscall.EPIPE, syscall.ENODEV, syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// retry runs once until it succeeds, fails for good, or ctx ends. The final
// error names what was dialled, the time spent and the last attempt's error.
func (d Dialer) retry(ctx context.Context, what string, once func(context.Context) (net.Conn, error)) (net.Conn, error) {
	minB, maxB := d.MinBackoff, d.MaxBackoff
	if minB <= 0 {
		minB = 20 * time.Millisecond
	}
	if maxB < minB {
		maxB = max(100*time.Millisecond, minB)
	}
	start := time.Now()
	backoff := minB
	attempts := 0
	var last error
	for {
		attempts++
		c, err := once(ctx)
		if err == nil {
			return c, nil
		}
		var nr notReady
		if !errors.As(err, &nr) && !pastDeadline(ctx) {
			return nil, fmt.Errorf("dial %s: %w", what, err)
		}
		// An attempt cut short by the deadline says nothing about the
		// guest: keep the reason the previous one failed. The connection's
		// own deadline can fire just before ctx reports it, so ask the clock.
		if !pastDeadline(ctx) || last == nil {
			last = err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("dial %s: not ready after %s (%d attempts): %w (last error: %v)",
				what, time.Since(start).Round(time.Millisecond), attempts, ctx.Err(), last)
		case <-t.C:
		}
		backoff = min(backoff*2, maxB)
	}
}

// pastDeadline reports whether ctx is done or its deadline has passed.
func pastDeadline(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}
