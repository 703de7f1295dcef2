package vhostuser

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// virtio-vsock (virtio 1.2, 5.10).
const (
	hostCID = 2
	hdrSize = 44

	typeStream = 1

	opRequest       = 1
	opResponse      = 2
	opRst           = 3
	opShutdown      = 4
	opRW            = 5
	opCreditUpdate  = 6
	opCreditRequest = 7

	shutdownRecv = 1
	shutdownSend = 2

	rxQueue = 0
	txQueue = 1

	// bufAlloc is the receive buffer each connection offers the guest: it
	// never has more than this in flight towards a host socket.
	bufAlloc = 256 << 10
	// maxPacket bounds one packet's payload from the guest (Linux sends at
	// most 64 KiB).
	maxPacket = 64 << 10
	// outLimit is how much a connection reads from its host socket ahead of
	// the guest's credit.
	outLimit = 64 << 10
	// A guest that posts no receive buffers, or opens connection after
	// connection, must not grow the shim without bound.
	maxCtrls = 4096
	maxConns = 1024
)

type hdr struct {
	srcCID, dstCID            uint64
	srcPort, dstPort, length  uint32
	typ, op                   uint16
	flags, bufAlloc, fwdCount uint32
}

func parseHdr(b []byte) hdr {
	return hdr{
		srcCID: binary.LittleEndian.Uint64(b[0:]), dstCID: binary.LittleEndian.Uint64(b[8:]),
		srcPort: binary.LittleEndian.Uint32(b[16:]), dstPort: binary.LittleEndian.Uint32(b[20:]),
		length: binary.LittleEndian.Uint32(b[24:]),
		typ:    binary.LittleEndian.Uint16(b[28:]), op: binary.LittleEndian.Uint16(b[30:]),
		flags: binary.LittleEndian.Uint32(b[32:]), bufAlloc: binary.LittleEndian.Uint32(b[36:]),
		fwdCount: binary.LittleEndian.Uint32(b[40:]),
	}
}

func (h hdr) put(b []byte) {
	binary.LittleEndian.PutUint64(b[0:], h.srcCID)
	binary.LittleEndian.PutUint64(b[8:], h.dstCID)
	binary.LittleEndian.PutUint32(b[16:], h.srcPort)
	binary.LittleEndian.PutUint32(b[20:], h.dstPort)
	binary.LittleEndian.PutUint32(b[24:], h.length)
	binary.LittleEndian.PutUint16(b[28:], h.typ)
	binary.LittleEndian.PutUint16(b[30:], h.op)
	binary.LittleEndian.PutUint32(b[32:], h.flags)
	binary.LittleEndian.PutUint32(b[36:], h.bufAlloc)
	binary.LittleEndian.PutUint32(b[40:], h.fwdCount)
}

// key names a connection by its two ports.
type key struct{ host, guest uint32 }

// ctrl is a packet without payload waiting for an rx buffer.
type ctrl struct {
	k     key
	op    uint16
	flags uint32
}

// device is the vsock device behind one front-end. mu guards everything;
// the loop goroutine is the only one touching the rings' memory.
type device struct {
	cfg Config

	mu       sync.Mutex
	mem      *memory
	rings    [2]vring
	conns    map[key]*conn
	ctrls    []ctrl
	sendable []*conn // connections with data or a pending shutdown for the guest
	nextPort uint32
	closed   bool
	// ctrlsFull: send dropped a packet (reported once)
	ctrlsFull bool

	wake chan struct{}
	quit chan struct{}
}

func newDevice(cfg Config) *device {
	d := &device{cfg: cfg, conns: map[key]*conn{}, nextPort: 1 << 30,
		wake: make(chan struct{}, 1), quit: make(chan struct{})}
	go d.loop()
	return d
}

// poke makes the loop look at the rings and the queues again.
func (d *device) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *device) close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	for _, c := range d.conns {
		c.shut()
	}
	d.conns = map[key]*conn{}
	for i := range d.rings {
		closeFile(&d.rings[i].kick)
		closeFile(&d.rings[i].call)
	}
	close(d.quit)
	// The loop touches the rings only while holding mu.
	d.mem.unmap()
	d.mem = nil
	d.mu.Unlock()
}

func closeFile(f **os.File) {
	if *f != nil {
		(*f).Close()
		*f = nil
	}
}

func (d *device) loop() {
	for {
		select {
		case <-d.wake:
		case <-d.quit:
			return
		}
		d.mu.Lock()
		if !d.closed {
			d.processTx()
			d.processRx()
		}
		d.mu.Unlock()
	}
}

// --- control plane (called by the front-end goroutine) ---

func (d *device) setMemTable(p []byte, fds []int) error {
	m, err := mapMemTable(p, fds)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mem.unmap()
	d.mem = m
	for i := range d.rings {
		if err := d.rings[i].resolve(m); err != nil {
			return fmt.Errorf("vring %d: %w", i, err)
		}
	}
	return nil
}

func (d *device) ring(idx uint32) (*vring, error) {
	if idx >= uint32(len(d.rings)) {
		return nil, fmt.Errorf("vring %d: the device has %d", idx, len(d.rings))
	}
	return &d.rings[idx], nil
}

func (d *device) setVringState(req, idx, num uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.ring(idx)
	if err != nil {
		return err
	}
	switch req {
	case reqSetVringNum:
		if num == 0 || num > 32768 || num&(num-1) != 0 {
			return fmt.Errorf("vring %d: size %d", idx, num)
		}
		v.num = uint16(num)
		if d.mem != nil {
			return v.resolve(d.mem)
		}
	case reqSetVringBase:
		v.lastAvail, v.usedIdx = uint16(num), uint16(num)
	case reqSetVringEnable:
		v.enabled = num != 0
		d.poke()
	}
	return nil
}

func (d *device) setVringAddr(idx uint32, desc, used, avail uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.ring(idx)
	if err != nil {
		return err
	}
	v.descAddr, v.usedAddr, v.availAddr, v.addrSet = desc, used, avail, true
	if d.mem != nil {
		return v.resolve(d.mem)
	}
	return nil
}

func (d *device) setVringFD(req, idx uint32, fd int) error {
	var f *os.File
	if fd >= 0 {
		unix.SetNonblock(fd, true) // so reads go through Go's poller and Close ends them
		f = os.NewFile(uintptr(fd), fmt.Sprintf("vring%d", idx))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.ring(idx)
	if err != nil {
		if f != nil {
			f.Close()
		}
		return err
	}
	switch req {
	case reqSetVringKick:
		closeFile(&v.kick)
		if f == nil {
			return fmt.Errorf("vring %d: polling mode is not supported", idx)
		}
		v.kick = f
		// Without VHOST_USER_F_PROTOCOL_FEATURES a ring starts on its kick
		// fd; with it, on SET_VRING_ENABLE. Both are accepted.
		v.started, v.enabled = true, true
		go d.watchKick(f)
		d.poke()
	case reqSetVringCall:
		closeFile(&v.call)
		v.call = f
	case reqSetVringErr:
		if f != nil {
			f.Close()
		}
	}
	return nil
}

// watchKick pokes the loop each time the driver kicks, until the fd closes.
func (d *device) watchKick(f *os.File) {
	var b [8]byte
	for {
		if _, err := f.Read(b[:]); err != nil {
			return
		}
		d.poke()
	}
}

// stopVring is GET_VRING_BASE: the ring stops and its position is handed
// back. A stopped tx ring means the driver is gone: its connections are too.
func (d *device) stopVring(idx uint32) (uint16, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.ring(idx)
	if err != nil {
		return 0, err
	}
	v.started = false
	closeFile(&v.kick)
	if idx == txQueue {
		for k, c := range d.conns {
			c.shut()
			delete(d.conns, k)
		}
		d.ctrls, d.sendable = nil, nil
	}
	return v.lastAvail, nil
}

// --- data plane (the loop, with mu held) ---

// processTx takes every packet the driver queued and acts on it.
func (d *device) processTx() {
	v := &d.rings[txQueue]
	if !v.ready() || d.mem == nil {
		return
	}
	used := false
	for {
		head, ok := v.pop()
		if !ok {
			break
		}
		pkt, err := d.gather(v, head)
		v.push(head, 0)
		used = true
		if err != nil {
			d.cfg.Logf("vhost-user vsock: tx: %v", err)
			continue
		}
		d.handle(parseHdr(pkt), pkt[hdrSize:])
	}
	if used {
		v.notify()
	}
}

// gather copies a tx chain's readable bytes: the header, then the payload
// its length field announces.
func (d *device) gather(v *vring, head uint16) ([]byte, error) {
	bufs, err := v.chain(d.mem, head)
	if err != nil {
		return nil, err
	}
	var pkt []byte
	for _, b := range bufs {
		if b.writable {
			continue
		}
		if len(pkt)+len(b.data) > hdrSize+maxPacket {
			return nil, fmt.Errorf("packet over %d bytes", hdrSize+maxPacket)
		}
		pkt = append(pkt, b.data...)
	}
	if len(pkt) < hdrSize {
		return nil, fmt.Errorf("packet of %d bytes: no header", len(pkt))
	}
	n := binary.LittleEndian.Uint32(pkt[24:])
	if uint64(n) > uint64(len(pkt)-hdrSize) {
		return nil, fmt.Errorf("packet announces %d payload bytes, carries %d", n, len(pkt)-hdrSize)
	}
	return pkt[:hdrSize+int(n)], nil
}

// processRx fills the driver's receive buffers with what waits for it:
// control packets first, then connection data within the guest's credit.
func (d *device) processRx() {
	v := &d.rings[rxQueue]
	if !v.ready() || d.mem == nil {
		return
	}
	used := false
	for d.pending() {
		head, ok := v.pop()
		if !ok {
			break
		}
		bufs, err := v.chain(d.mem, head)
		if err != nil {
			d.cfg.Logf("vhost-user vsock: rx: %v", err)
			v.push(head, 0)
			used = true
			continue
		}
		room := 0
		for _, b := range bufs {
			if b.writable {
				room += len(b.data)
			}
		}
		if room < hdrSize {
			d.cfg.Logf("vhost-user vsock: rx buffer of %d bytes", room)
			v.push(head, 0)
			used = true
			continue
		}
		pkt := d.next(room - hdrSize)
		v.push(head, scatter(bufs, pkt))
		used = true
	}
	if used {
		v.notify()
	}
}

// scatter writes pkt into the chain's writable buffers.
func scatter(bufs []buf, pkt []byte) uint32 {
	n := 0
	for _, b := range bufs {
		if !b.writable || n == len(pkt) {
			continue
		}
		n += copy(b.data, pkt[n:])
	}
	return uint32(n)
}

// pending reports whether anything waits for the guest.
func (d *device) pending() bool {
	if len(d.ctrls) > 0 {
		return true
	}
	for len(d.sendable) > 0 {
		if d.sendable[0].canSend() {
			return true
		}
		d.sendable[0].queued = false
		d.sendable = d.sendable[1:]
	}
	return false
}

// next builds the next packet for the guest, its payload at most room
// bytes. pending has said there is one.
func (d *device) next(room int) []byte {
	if len(d.ctrls) > 0 {
		cp := d.ctrls[0]
		d.ctrls = d.ctrls[1:]
		h := d.header(cp.k, cp.op, cp.flags)
		pkt := make([]byte, hdrSize)
		h.put(pkt)
		return pkt
	}
	c := d.sendable[0]
	pkt, more := c.take(d, room)
	if !more {
		c.queued = false
		d.sendable = d.sendable[1:]
	} else {
		// Round robin: the next buffer goes to the next connection.
		d.sendable = append(d.sendable[1:], c)
	}
	return pkt
}

// header is a packet from the host side of k, with the connection's
// credit when it still exists.
func (d *device) header(k key, op uint16, flags uint32) hdr {
	h := hdr{srcCID: hostCID, dstCID: uint64(d.cfg.GuestCID), srcPort: k.host, dstPort: k.guest,
		typ: typeStream, op: op, flags: flags, bufAlloc: bufAlloc}
	if c := d.conns[k]; c != nil {
		h.fwdCount = c.fwdCount
		c.sentFwd = c.fwdCount
	}
	return h
}

func (d *device) send(k key, op uint16, flags uint32) {
	if len(d.ctrls) >= maxCtrls {
		if !d.ctrlsFull {
			d.ctrlsFull = true
			d.cfg.Logf("vhost-user vsock: %d packets wait for the guest to post receive buffers; dropping more", maxCtrls)
		}
		return
	}
	d.ctrls = append(d.ctrls, ctrl{k, op, flags})
	d.poke()
}

func (d *device) markSendable(c *conn) {
	if !c.queued {
		c.queued = true
		d.sendable = append(d.sendable, c)
	}
	d.poke()
}

// handle acts on one packet from the guest.
func (d *device) handle(h hdr, payload []byte) {
	if h.srcCID != uint64(d.cfg.GuestCID) || h.dstCID != hostCID {
		d.cfg.Logf("vhost-user vsock: packet from cid %d to cid %d dropped", h.srcCID, h.dstCID)
		return
	}
	k := key{host: h.dstPort, guest: h.srcPort}
	c := d.conns[k]
	if h.typ != typeStream {
		if h.op != opRst {
			d.send(k, opRst, 0)
		}
		return
	}
	if c == nil {
		switch h.op {
		case opRequest:
			if len(d.conns) >= maxConns {
				d.cfg.Logf("vhost-user vsock: the guest has %d connections open; refusing port %d", maxConns, k.host)
				d.send(k, opRst, 0)
				return
			}
			d.guestConnect(k, h)
		case opRst:
		default:
			d.send(k, opRst, 0)
		}
		return
	}
	c.peerBufAlloc, c.peerFwd = h.bufAlloc, h.fwdCount
	switch h.op {
	case opResponse:
		if c.state != connecting || !c.fromHost {
			d.reset(c)
			return
		}
		c.state = established
		close(c.answered)
		d.markSendable(c)
	case opRW:
		if c.state != established {
			d.reset(c)
			return
		}
		if len(c.inbox)+len(payload) > bufAlloc {
			d.cfg.Logf("vhost-user vsock: port %d: the guest sent past its credit", k.host)
			d.reset(c)
			return
		}
		c.inbox = append(c.inbox, payload...)
		c.wakeWriter()
	case opCreditUpdate:
		d.markSendable(c)
	case opCreditRequest:
		d.send(k, opCreditUpdate, 0)
	case opShutdown:
		// The writer passes the end on once everything the guest sent
		// before it is written: a half-close, or with both flags (the
		// guest closed) an RST and the socket closed.
		if h.flags&shutdownSend != 0 {
			c.peerDone = true
		}
		if h.flags&shutdownRecv != 0 {
			c.peerNoRecv = true
			c.out = nil
		}
		c.wakeWriter()
	case opRst:
		d.drop(c)
	default:
		d.reset(c)
	}
}

// drop forgets c and closes its host socket.
func (d *device) drop(c *conn) {
	if d.conns[c.k] == c {
		delete(d.conns, c.k)
	}
	c.shut()
}

// reset tells the guest c is gone, and drops it.
func (d *device) reset(c *conn) {
	d.send(c.k, opRst, 0)
	d.drop(c)
}

// guestConnect answers a guest's REQUEST to host port k.host: the host
// side is the unix socket <uds>_<port>. The dial runs off the loop.
func (d *device) guestConnect(k key, h hdr) {
	c := newConn(k, false)
	c.peerBufAlloc, c.peerFwd = h.bufAlloc, h.fwdCount
	d.conns[k] = c
	go func() {
		sock, err := dialUnix(fmt.Sprintf("%s_%d", d.cfg.UDS, k.host))
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.conns[k] != c || d.closed {
			if sock != nil {
				sock.Close()
			}
			return
		}
		if err != nil {
			delete(d.conns, k)
			d.send(k, opRst, 0)
			return
		}
		c.sock = sock
		c.state = established
		close(c.answered)
		d.send(k, opResponse, 0)
		c.start(d)
	}()
}

// allocPort picks the host port of a host-initiated connection.
func (d *device) allocPort(guestPort uint32) uint32 {
	for {
		p := d.nextPort
		d.nextPort++
		if d.nextPort >= 1<<31 {
			d.nextPort = 1 << 30
		}
		if d.conns[key{p, guestPort}] == nil {
			return p
		}
	}
}
