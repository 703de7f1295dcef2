package api

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// PortForwardPort is the guest vsock port of port-forward connections
// (`kubectl port-forward`): one connection per forwarded TCP connection.
const PortForwardPort uint32 = 1027

// MaxPortForwardHeader bounds the port-forward handshake line, newline
// included: "FORWARD 65535\n" is 14 bytes.
const MaxPortForwardHeader = 16

// PortForwardHeader is the one line a host sends on a new PortForwardPort
// connection:
//
//	FORWARD <port>\n
//
// The guest answers "OK\n" once it is connected to <port> on its own
// loopback, or "ERR <reason>\n" and closes; raw bytes follow an OK. The
// host names a port only: the guest never dials an address the host chose.
type PortForwardHeader struct {
	Port uint16
}

// String formats the handshake line, newline included.
func (h PortForwardHeader) String() string {
	return "FORWARD " + strconv.Itoa(int(h.Port)) + "\n"
}

// Validate checks the port (1-65535).
func (h PortForwardHeader) Validate() error {
	return (&PortForwardRequest{Port: uint32(h.Port)}).Validate()
}

// ParsePortForwardHeader parses a handshake line (with or without its
// newline): exactly "FORWARD", one space, and a decimal port without sign
// or leading zeros.
func ParsePortForwardHeader(line string) (PortForwardHeader, error) {
	if len(line) > MaxPortForwardHeader {
		return PortForwardHeader{}, fmt.Errorf("port-forward header longer than %d bytes: %w", MaxPortForwardHeader, errdefs.ErrInvalidArgument)
	}
	line = strings.TrimSuffix(line, "\n")
	num, ok := strings.CutPrefix(line, "FORWARD ")
	if !ok || num == "" || num[0] == '0' || len(num) > 5 || strings.Trim(num, "0123456789") != "" {
		return PortForwardHeader{}, fmt.Errorf("port-forward header %q: want \"FORWARD <port>\" with a port 1-65535: %w", line, errdefs.ErrInvalidArgument)
	}
	n, _ := strconv.Atoi(num) // five digits at most: cannot fail
	r := &PortForwardRequest{Port: uint32(n)}
	if err := r.Validate(); err != nil {
		return PortForwardHeader{}, err
	}
	return PortForwardHeader{Port: uint16(n)}, nil
}

// Validate checks a PortForwardRequest: a TCP port, 1-65535.
func (r *PortForwardRequest) Validate() error {
	if p := r.GetPort(); p < 1 || p > 65535 {
		return invalid("port", "%d: want a TCP port 1-65535", p)
	}
	return nil
}

// halfCloser is a connection whose sending side can close alone (TCP, vsock).
type halfCloser interface{ CloseWrite() error }

// SpliceGrace is how long the other direction of a forward may go on once
// one has ended. The end is passed on as a half-close, but a half-close
// does not cross every vsock path (vhost-device-vsock drops it), and a
// client waiting for the end of an answer would wait forever; containerd's
// CRI port-forward, the far end of this, gives the same 1 s.
const SpliceGrace = time.Second

// Splice copies a forward's bytes both ways until one direction ends,
// passes that end on as a half-close, and gives the other direction
// SpliceGrace to finish before closing both. Both ends of a forward, the
// shim and the agent, use it.
func Splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	pass := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if hc, ok := dst.(halfCloser); ok {
			hc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pass(a, b)
	go pass(b, a)
	<-done
	select {
	case <-done:
	case <-time.After(SpliceGrace):
	}
	a.Close()
	b.Close()
}
