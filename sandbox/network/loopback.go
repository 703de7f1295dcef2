package network

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Port-forward (`kubectl port-forward`, `crictl port-forward`): containerd's
// CRI enters the pod's network namespace and dials localhost:<port> there
// (tcp4, then tcp6), and offers runtimes no hook for it. In a coco pod
// nothing listens there: the workload is in the guest. So the namespace's
// loopback is given to the shim: an nftables rule sends every TCP
// connection to 127.0.0.1 (and ::1) to one listener of the shim's, which
// reads the port asked for (SO_ORIGINAL_DST) and opens a stream to that
// port on the guest's loopback through the agent.

// OpenFunc connects to TCP port on the guest's loopback.
type OpenFunc func(ctx context.Context, port uint16) (net.Conn, error)

// LoopbackForwarding is the optional capability of a Plumber that forwards
// connections to the pod namespace's loopback into the guest.
type LoopbackForwarding interface {
	// ForwardLoopback starts forwarding in the namespace at nsPath until
	// the returned forwarder is closed; the Plumber's Teardown removes
	// what it left in the namespace (also after a shim crash).
	ForwardLoopback(ctx context.Context, nsPath string, open OpenFunc) (*LoopbackForwarder, error)
}

var _ LoopbackForwarding = Netlink{}

// Limits of a LoopbackForwarder.
const (
	// maxForwards bounds live forwarded connections per pod.
	maxForwards = 64
	// openTimeout bounds opening one stream to the guest (the guest's
	// policy check and its own dial included).
	openTimeout = 10 * time.Second
)

// LoopbackForwarder holds the listeners in a pod's namespace and the
// connections they forward.
type LoopbackForwarder struct {
	listeners []net.Listener
	open      OpenFunc
	slots     chan struct{}
	wg        sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Ports are the listeners' ports in the namespace, 127.0.0.1's first.
func (f *LoopbackForwarder) Ports() []uint16 {
	var out []uint16
	for _, l := range f.listeners {
		out = append(out, uint16(l.Addr().(*net.TCPAddr).Port))
	}
	return out
}

func (Netlink) ForwardLoopback(ctx context.Context, nsPath string, open OpenFunc) (*LoopbackForwarder, error) {
	f := &LoopbackForwarder{open: open, slots: make(chan struct{}, maxForwards), conns: map[net.Conn]struct{}{}}
	var port4, port6 uint16
	err := inNetNS(nsPath, func() error {
		// The sockets belong to the namespace they were made in, whatever
		// thread accepts on them later.
		l4, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("listen on 127.0.0.1: %w", err)
		}
		f.listeners = append(f.listeners, l4)
		port4 = uint16(l4.Addr().(*net.TCPAddr).Port)
		// ::1 is absent where IPv6 is disabled: then only IPv4 is served
		// (containerd tries tcp4 first anyway).
		if l6, err := net.Listen("tcp6", net.JoinHostPort("::1", fmt.Sprint(port4))); err == nil {
			f.listeners = append(f.listeners, l6)
		} else if l6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
			f.listeners = append(f.listeners, l6)
		}
		if len(f.listeners) == 2 {
			port6 = uint16(f.listeners[1].Addr().(*net.TCPAddr).Port)
		}
		return nil
	})
	if err == nil {
		err = withNSFd(nsPath, func(fd int) error { return installLoopbackRedirect(fd, port4, port6) })
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("port-forward in %s: %w", nsPath, err)
	}
	for _, l := range f.listeners {
		f.wg.Add(1)
		go f.serve(ctx, l)
	}
	return f, nil
}

func withNSFd(nsPath string, fn func(fd int) error) error {
	ns, err := os.Open(nsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	return fn(int(ns.Fd()))
}

// Close stops listening and ends the forwarded connections.
func (f *LoopbackForwarder) Close() error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	f.closed = true
	for _, l := range f.listeners {
		l.Close()
	}
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return nil
}

func (f *LoopbackForwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *LoopbackForwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *LoopbackForwarder) serve(ctx context.Context, l net.Listener) {
	defer f.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.G(ctx).WithError(err).Warn("port-forward listener stopped")
			}
			return
		}
		select {
		case f.slots <- struct{}{}:
		default:
			log.G(ctx).Warnf("port-forward: more than %d connections at once; refusing one", maxForwards)
			c.Close()
			continue
		}
		if !f.track(c) {
			<-f.slots
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-f.slots }()
			defer f.untrack(c)
			f.forward(ctx, c)
		}()
	}
}

// forward opens a stream to the port the client asked for and splices.
func (f *LoopbackForwarder) forward(ctx context.Context, c net.Conn) {
	port, err := originalPort(c)
	if err != nil {
		log.G(ctx).WithError(err).Warn("port-forward: which port the client asked for is unknown")
		return
	}
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	guest, err := f.open(octx, port)
	cancel()
	if err != nil {
		// The client (containerd's CRI) sees its connection close; why is
		// here, with the guest's own reason.
		log.G(ctx).WithError(err).Warnf("port-forward to guest port %d", port)
		return
	}
	if !f.track(guest) {
		return
	}
	defer f.untrack(guest)
	log.G(ctx).Debugf("port-forward to guest port %d", port)
	api.Splice(c, guest)
}

// originalPort is the port a redirected connection was made to: the
// conntrack entry's original destination (SO_ORIGINAL_DST, and its IPv6
// twin IP6T_SO_ORIGINAL_DST, both 80).
func originalPort(c net.Conn) (uint16, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, fmt.Errorf("not a TCP connection: %T", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	v6 := c.LocalAddr().(*net.TCPAddr).IP.To4() == nil
	var port uint16
	var serr error
	err = raw.Control(func(fd uintptr) {
		if v6 {
			// sockaddr_in6 (28 bytes) fits IPv6MTUInfo's leading field.
			var info *unix.IPv6MTUInfo
			info, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSoOriginalDst)
			if serr == nil {
				// Port holds network-order bytes read as a native uint16.
				var b [2]byte
				binary.NativeEndian.PutUint16(b[:], info.Addr.Port)
				port = binary.BigEndian.Uint16(b[:])
			}
			return
		}
		// sockaddr_in (16 bytes) fits IPv6Mreq (20 bytes); the port is
		// bytes 2-3, network order.
		var m *unix.IPv6Mreq
		m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if serr == nil {
			port = binary.BigEndian.Uint16(m.Multiaddr[2:4])
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return 0, fmt.Errorf("SO_ORIGINAL_DST: %w", err)
	}
	if port == 0 {
		return 0, fmt.Errorf("SO_ORIGINAL_DST: port 0: %w", syscall.EINVAL)
	}
	return port, nil
}

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h),
// which x/sys/unix does not name.
const ip6tSoOriginalDst = 80
