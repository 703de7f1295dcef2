package vhostuser

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

type connState int

const (
	connecting connState = iota
	established
)

// How long a host client may take to say which port it wants, and how long
// the guest may take to accept or refuse.
const (
	requestTimeout = 5 * time.Second
	answerTimeout  = 30 * time.Second
)

// conn is one vsock stream and its host unix socket. Every field is
// guarded by the device's mu; a reader and a writer goroutine move the
// bytes between the socket and the device's queues.
type conn struct {
	k        key
	fromHost bool // the host dialled (CONNECT); else the guest did
	state    connState
	sock     *net.UnixConn
	answered chan struct{} // closed once established
	gone     chan struct{} // closed by shut
	closed   bool

	// guest → host
	inbox      []byte
	fwdCount   uint32 // bytes written to sock: the guest's credit back
	sentFwd    uint32 // fwdCount the guest was last told
	peerDone   bool   // the guest sends no more (SHUTDOWN send)
	halfClosed bool
	writerWake chan struct{}

	// host → guest
	out          []byte
	readEOF      bool
	sentShutdown bool
	txCount      uint32 // payload bytes sent to the guest
	peerBufAlloc uint32
	peerFwd      uint32
	peerNoRecv   bool // the guest reads no more (SHUTDOWN receive)
	queued       bool // in device.sendable
	readerWake   chan struct{}
}

func newConn(k key, fromHost bool) *conn {
	return &conn{k: k, fromHost: fromHost, answered: make(chan struct{}), gone: make(chan struct{}),
		writerWake: make(chan struct{}, 1), readerWake: make(chan struct{}, 1)}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (c *conn) wakeWriter() { wake(c.writerWake) }

// shut closes the host socket and ends both goroutines.
func (c *conn) shut() {
	if c.closed {
		return
	}
	c.closed = true
	close(c.gone)
	if c.sock != nil {
		c.sock.Close()
	}
}

// credit is how many bytes the guest can take now.
func (c *conn) credit() uint32 {
	inFlight := c.txCount - c.peerFwd
	if inFlight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inFlight
}

// canSend reports whether c has a packet for the guest.
func (c *conn) canSend() bool {
	if c.closed || c.state != established {
		return false
	}
	if len(c.out) > 0 {
		return c.credit() > 0
	}
	return c.readEOF && !c.sentShutdown
}

// take builds c's next packet, at most room payload bytes, and reports
// whether c has more.
func (c *conn) take(d *device, room int) ([]byte, bool) {
	if len(c.out) > 0 {
		n := min(len(c.out), room, int(c.credit()))
		h := d.header(c.k, opRW, 0)
		h.length = uint32(n)
		pkt := make([]byte, hdrSize+n)
		h.put(pkt)
		copy(pkt[hdrSize:], c.out[:n])
		c.out = c.out[n:]
		if len(c.out) == 0 {
			c.out = nil
		}
		c.txCount += uint32(n)
		wake(c.readerWake)
		return pkt, c.canSend()
	}
	c.sentShutdown = true
	h := d.header(c.k, opShutdown, shutdownSend)
	pkt := make([]byte, hdrSize)
	h.put(pkt)
	return pkt, false
}

// start runs the goroutines of an established connection.
func (c *conn) start(d *device) {
	go c.reader(d)
	go c.writer(d)
}

// reader moves host bytes towards the guest, reading ahead at most
// outLimit bytes.
func (c *conn) reader(d *device) {
	buf := make([]byte, 32<<10)
	for {
		d.mu.Lock()
		for !c.closed && len(c.out) >= outLimit {
			d.mu.Unlock()
			select {
			case <-c.readerWake:
			case <-c.gone:
			}
			d.mu.Lock()
		}
		closed := c.closed
		d.mu.Unlock()
		if closed {
			return
		}
		n, err := c.sock.Read(buf)
		d.mu.Lock()
		if c.closed {
			d.mu.Unlock()
			return
		}
		if n > 0 && !c.peerNoRecv {
			c.out = append(c.out, buf[:n]...)
		}
		if err != nil {
			c.readEOF = true // EOF, or the socket failed: no more to send
		}
		d.markSendable(c)
		d.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// writer moves the guest's bytes to the host socket and returns credit.
func (c *conn) writer(d *device) {
	for {
		d.mu.Lock()
		for {
			if c.closed {
				d.mu.Unlock()
				return
			}
			if len(c.inbox) > 0 || c.peerDone && !c.halfClosed {
				break
			}
			if c.peerDone && c.peerNoRecv { // the guest closed, all it sent is written
				d.reset(c)
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
			select {
			case <-c.writerWake:
			case <-c.gone:
			}
			d.mu.Lock()
		}
		if len(c.inbox) == 0 { // the guest is done sending
			c.halfClosed = true
			d.mu.Unlock()
			c.sock.CloseWrite()
			continue
		}
		data := c.inbox
		c.inbox = nil
		d.mu.Unlock()
		_, err := c.sock.Write(data)
		d.mu.Lock()
		if c.closed {
			d.mu.Unlock()
			return
		}
		if err != nil {
			d.reset(c)
			d.mu.Unlock()
			return
		}
		c.fwdCount += uint32(len(data))
		if c.fwdCount-c.sentFwd >= bufAlloc/4 {
			d.send(c.k, opCreditUpdate, 0)
		}
		d.mu.Unlock()
	}
}

// acceptHybrid serves host clients of the hybrid socket until it closes.
func (d *device) acceptHybrid(l *net.UnixListener) {
	for {
		s, err := l.AcceptUnix()
		if err != nil {
			return
		}
		go d.hostConnect(s)
	}
}

// hostConnect runs one "CONNECT <port>\n" → "OK <host port>\n" exchange
// and then hands the socket to the connection.
func (d *device) hostConnect(s *net.UnixConn) {
	s.SetReadDeadline(time.Now().Add(requestTimeout))
	port, err := readConnect(s)
	if err != nil {
		s.Close()
		return
	}
	s.SetReadDeadline(time.Time{})
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		s.Close()
		return
	}
	k := key{host: d.allocPort(port), guest: port}
	c := newConn(k, true)
	c.sock = s
	d.conns[k] = c
	d.send(k, opRequest, 0)
	d.mu.Unlock()

	t := time.NewTimer(answerTimeout)
	defer t.Stop()
	select {
	case <-c.answered:
	case <-c.gone: // refused (RST) or the device stopped: the client sees EOF
		return
	case <-t.C:
		d.mu.Lock()
		if !c.closed {
			d.reset(c)
		}
		d.mu.Unlock()
		return
	}
	// A client that gave up meanwhile makes this write fail: the guest's
	// side is reset, nothing else is affected.
	_, err = fmt.Fprintf(s, "OK %d\n", k.host)
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.closed {
		return
	}
	if err != nil {
		d.reset(c)
		return
	}
	c.start(d)
}

// readConnect reads "CONNECT <port>\n" a byte at a time, so nothing the
// client sends after it is consumed here.
func readConnect(s *net.UnixConn) (uint32, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := s.Read(b); err != nil {
			return 0, err
		}
		if b[0] == '\n' {
			f := strings.Fields(string(line))
			if len(f) != 2 || f[0] != "CONNECT" {
				return 0, fmt.Errorf("request %q", line)
			}
			p, err := strconv.ParseUint(f[1], 10, 32)
			return uint32(p), err
		}
		line = append(line, b[0])
	}
	return 0, fmt.Errorf("request line too long")
}

func dialUnix(path string) (*net.UnixConn, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
