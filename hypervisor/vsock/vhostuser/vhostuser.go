// Package vhostuser is a vhost-user back-end for QEMU's vhost-user-vsock
// device, run inside the shim: it takes the place of a per-VM
// vhost-device-vsock process. QEMU connects to its control socket and
// shares the guest's memory and the device's two virtqueues (rx, tx); the
// back-end moves virtio-vsock packets between them and the host's "hybrid
// vsock" unix sockets (see package vsock): a host client of <uds> writes
// "CONNECT <port>\n" and gets "OK <host port>\n" and a byte stream to that
// guest port, and a guest connection to host port P is a connection to the
// unix socket <uds>_P.
//
// The protocol is the vhost-user specification's (QEMU docs/interop/
// vhost-user.rst) with only what this device needs: no multiqueue, no
// migration log, no reply-ack, no in-flight tracking, split virtqueues
// without event index or indirect descriptors.
package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Front-end requests (vhost-user.rst, "Front-end message types").
const (
	reqGetFeatures         = 1
	reqSetFeatures         = 2
	reqSetOwner            = 3
	reqResetOwner          = 4
	reqSetMemTable         = 5
	reqSetVringNum         = 8
	reqSetVringAddr        = 9
	reqSetVringBase        = 10
	reqGetVringBase        = 11
	reqSetVringKick        = 12
	reqSetVringCall        = 13
	reqSetVringErr         = 14
	reqGetProtocolFeatures = 15
	reqSetProtocolFeatures = 16
	reqSetVringEnable      = 18
	reqGetConfig           = 24
	reqSetConfig           = 25
)

const (
	flagVersion = 0x1
	flagReply   = 0x4
	headerSize  = 12
	maxPayload  = 4096 // the largest message here (a memory table) is 328 bytes
	maxRegions  = 8
	vringNoFD   = 1 << 8

	featVersion1         = 1 << 32 // VIRTIO_F_VERSION_1
	featProtocolFeatures = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES
	protoConfig          = 1 << 9  // VHOST_USER_PROTOCOL_F_CONFIG: the guest CID is read from us
)

// Config describes one device.
type Config struct {
	GuestCID uint32
	// UDS is the hybrid-vsock socket path the back-end listens on; guest
	// connections to host port P go to UDS_P.
	UDS string
	// Logf reports what goes wrong on the device (never payload bytes).
	Logf func(format string, args ...any)
}

// Backend serves one VM's vsock device.
type Backend struct {
	cfg      Config
	listener net.Listener // QEMU's control connection arrives here
	hybrid   *net.UnixListener
	dev      *device

	closeOnce sync.Once
	done      chan struct{}
}

// Listen creates the control socket at path (QEMU's -chardev socket,path=)
// and the hybrid socket at cfg.UDS, and serves the first front-end that
// connects. Close ends everything.
func Listen(path string, cfg Config) (*Backend, error) {
	for _, p := range []string{path, cfg.UDS} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("vhost-user vsock: remove stale socket: %w", err)
		}
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("vhost-user vsock: %w", err)
	}
	h, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.UDS, Net: "unix"})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("vhost-user vsock: %w", err)
	}
	b := &Backend{cfg: cfg, listener: l, hybrid: h, done: make(chan struct{})}
	b.dev = newDevice(cfg)
	go b.acceptFrontEnd()
	go b.dev.acceptHybrid(h)
	return b, nil
}

// Done is closed when the back-end has stopped: QEMU hung up, or Close.
func (b *Backend) Done() <-chan struct{} { return b.done }

// Close stops serving and closes every connection. A nil Backend is
// closed already.
func (b *Backend) Close() error {
	if b == nil {
		return nil
	}
	b.closeOnce.Do(func() {
		b.listener.Close()
		b.hybrid.Close()
		b.dev.close()
		close(b.done)
	})
	return nil
}

func (b *Backend) acceptFrontEnd() {
	c, err := b.listener.Accept()
	b.listener.Close() // one front-end per device
	if err != nil {
		b.Close()
		return
	}
	uc := c.(*net.UnixConn)
	err = b.serve(uc)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		b.cfg.Logf("vhost-user vsock: front-end: %v", err)
	}
	uc.Close()
	b.Close()
}

// message is one front-end request with the fds that came with it.
type message struct {
	req     uint32
	flags   uint32
	payload []byte
	fds     []int
}

func (m *message) closeFDs() {
	for _, fd := range m.fds {
		unix.Close(fd)
	}
	m.fds = nil
}

func readMessage(c *net.UnixConn) (*message, error) {
	hdr := make([]byte, headerSize)
	oob := make([]byte, unix.CmsgSpace(maxRegions*4))
	n, oobn, _, _, err := c.ReadMsgUnix(hdr, oob)
	if err != nil {
		return nil, err
	}
	m := &message{}
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for _, cm := range cmsgs {
				fds, err := unix.ParseUnixRights(&cm)
				if err == nil {
					m.fds = append(m.fds, fds...)
				}
			}
		}
	}
	if n == 0 {
		m.closeFDs()
		return nil, io.EOF
	}
	if n < headerSize {
		if _, err := io.ReadFull(c, hdr[n:]); err != nil {
			m.closeFDs()
			return nil, err
		}
	}
	m.req = binary.LittleEndian.Uint32(hdr[0:])
	m.flags = binary.LittleEndian.Uint32(hdr[4:])
	size := binary.LittleEndian.Uint32(hdr[8:])
	if size > maxPayload {
		m.closeFDs()
		return nil, fmt.Errorf("request %d: payload of %d bytes", m.req, size)
	}
	m.payload = make([]byte, size)
	if _, err := io.ReadFull(c, m.payload); err != nil {
		m.closeFDs()
		return nil, err
	}
	return m, nil
}

func reply(c *net.UnixConn, req uint32, payload []byte) error {
	b := make([]byte, headerSize+len(payload))
	binary.LittleEndian.PutUint32(b[0:], req)
	binary.LittleEndian.PutUint32(b[4:], flagVersion|flagReply)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(payload)))
	copy(b[headerSize:], payload)
	_, err := c.Write(b)
	return err
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// serve answers the front-end's requests until it hangs up.
func (b *Backend) serve(c *net.UnixConn) error {
	d := b.dev
	for {
		m, err := readMessage(c)
		if err != nil {
			return err
		}
		if err := b.handle(c, d, m); err != nil {
			m.closeFDs()
			return fmt.Errorf("request %d: %w", m.req, err)
		}
	}
}

func (b *Backend) handle(c *net.UnixConn, d *device, m *message) error {
	p := m.payload
	need := func(n int) error {
		if len(p) < n {
			return fmt.Errorf("payload of %d bytes, want %d", len(p), n)
		}
		return nil
	}
	switch m.req {
	case reqGetFeatures:
		return reply(c, m.req, u64(featVersion1|featProtocolFeatures))
	case reqGetProtocolFeatures:
		return reply(c, m.req, u64(protoConfig))
	case reqSetFeatures, reqSetProtocolFeatures, reqSetOwner, reqResetOwner:
		return nil
	case reqGetConfig:
		// vhost_user_config: offset, size, flags, then the bytes asked for;
		// the vsock config space is the guest CID as a u64.
		if err := need(12); err != nil {
			return err
		}
		off, size := binary.LittleEndian.Uint32(p[0:]), binary.LittleEndian.Uint32(p[4:])
		if int(size) != len(p)-12 {
			return fmt.Errorf("config of %d bytes in a %d-byte payload", size, len(p))
		}
		space := u64(uint64(b.cfg.GuestCID))
		out := append([]byte(nil), p...)
		for i := uint32(0); i < size; i++ {
			out[12+i] = 0
			if off+i < uint32(len(space)) {
				out[12+i] = space[off+i]
			}
		}
		return reply(c, m.req, out)
	case reqSetConfig:
		return nil // the guest CID is not the guest's to change
	case reqSetMemTable:
		fds := m.fds
		m.fds = nil
		return d.setMemTable(p, fds)
	case reqSetVringNum, reqSetVringBase, reqSetVringEnable:
		if err := need(8); err != nil {
			return err
		}
		idx, num := binary.LittleEndian.Uint32(p[0:]), binary.LittleEndian.Uint32(p[4:])
		return d.setVringState(m.req, idx, num)
	case reqSetVringAddr:
		if err := need(40); err != nil {
			return err
		}
		return d.setVringAddr(binary.LittleEndian.Uint32(p[0:]),
			binary.LittleEndian.Uint64(p[8:]), binary.LittleEndian.Uint64(p[16:]), binary.LittleEndian.Uint64(p[24:]))
	case reqGetVringBase:
		if err := need(8); err != nil {
			return err
		}
		idx := binary.LittleEndian.Uint32(p[0:])
		last, err := d.stopVring(idx)
		if err != nil {
			return err
		}
		out := make([]byte, 8)
		binary.LittleEndian.PutUint32(out[0:], idx)
		binary.LittleEndian.PutUint32(out[4:], uint32(last))
		return reply(c, m.req, out)
	case reqSetVringKick, reqSetVringCall, reqSetVringErr:
		if err := need(8); err != nil {
			return err
		}
		v := binary.LittleEndian.Uint64(p)
		fd := -1
		if v&vringNoFD == 0 {
			if len(m.fds) != 1 {
				return fmt.Errorf("want one fd, got %d", len(m.fds))
			}
			fd = m.fds[0]
			m.fds = nil
		}
		return d.setVringFD(m.req, uint32(v&0xff), fd)
	}
	// Requests of features not offered: refuse rather than guess.
	return fmt.Errorf("unsupported")
}
