package vhostuser

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeGuest plays the driver side of the device: it owns guest memory
// (shared with the back-end through a memfd, as QEMU's is), fills the
// rings and kicks, as the Linux virtio-vsock driver does.
type fakeGuest struct {
	t       *testing.T
	d       *device
	mem     []byte
	kick    [2]int // eventfds the test writes
	call    [2]int
	availed [2]uint16
	seen    [2]uint16 // used entries already read
	nextTx  int
	logs    *logSink
	cid     uint32
}

const (
	memSize   = 1 << 20
	ringSize  = 8
	memQVA    = 0x7f0000000000 // the "front-end's" address of guest memory
	rxBufBase = 0x10000
	rxBufSize = 4096 + hdrSize
	txBufBase = 0x40000
)

func ringBase(i int) uint64 { return uint64(0x1000 * (i + 1)) }

type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logSink) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

func newFakeGuest(t *testing.T) *fakeGuest {
	t.Helper()
	fd, err := unix.MemfdCreate("guest", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, memSize); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, memSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	logs := &logSink{}
	uds := filepath.Join(t.TempDir(), "v.sock")
	g := &fakeGuest{t: t, mem: mem, logs: logs, cid: 3}
	g.d = newDevice(Config{GuestCID: g.cid, UDS: uds, Logf: logs.logf})
	t.Cleanup(g.d.close)

	table := make([]byte, 8+32)
	binary.LittleEndian.PutUint32(table, 1)
	binary.LittleEndian.PutUint64(table[8:], 0)        // gpa
	binary.LittleEndian.PutUint64(table[16:], memSize) // size
	binary.LittleEndian.PutUint64(table[24:], memQVA)  // qva
	binary.LittleEndian.PutUint64(table[32:], 0)       // mmap offset
	dup, _ := unix.Dup(fd)
	if err := g.d.setMemTable(table, []int{dup}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		b := ringBase(i)
		must(t, g.d.setVringState(reqSetVringNum, uint32(i), ringSize))
		must(t, g.d.setVringState(reqSetVringBase, uint32(i), 0))
		must(t, g.d.setVringAddr(uint32(i), memQVA+b, memQVA+b+0x200, memQVA+b+0x100))
		kick, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
		call, _ := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		g.kick[i], g.call[i] = kick, call
		callDup, _ := unix.Dup(call)
		kickDup, _ := unix.Dup(kick)
		must(t, g.d.setVringFD(reqSetVringCall, uint32(i), callDup))
		must(t, g.d.setVringFD(reqSetVringKick, uint32(i), kickDup))
		t.Cleanup(func() { unix.Close(kick); unix.Close(call) })
	}
	// Rx buffers for the back-end to write into, as the driver posts them.
	for range ringSize {
		g.postRx()
	}
	return g
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (g *fakeGuest) desc(ring int, i uint16, addr uint64, n uint32, flags, next uint16) {
	d := g.mem[ringBase(ring)+16*uint64(i):]
	binary.LittleEndian.PutUint64(d[0:], addr)
	binary.LittleEndian.PutUint32(d[8:], n)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

// offer puts head on ring's avail ring and kicks.
func (g *fakeGuest) offer(ring int, head uint16) {
	a := g.mem[ringBase(ring)+0x100:]
	binary.LittleEndian.PutUint16(a[4+2*(g.availed[ring]%ringSize):], head)
	g.availed[ring]++
	binary.LittleEndian.PutUint16(a[2:], g.availed[ring])
	var one [8]byte
	one[0] = 1
	unix.Write(g.kick[ring], one[:])
}

func (g *fakeGuest) postRx() {
	slot := g.availed[rxQueue] % ringSize
	g.desc(rxQueue, slot, rxBufBase+uint64(slot)*0x2000, rxBufSize, descWrite, 0)
	g.offer(rxQueue, slot)
}

// sendRaw queues a tx chain made of the given descriptors.
func (g *fakeGuest) sendRaw(descs func(first uint16)) {
	first := uint16(g.nextTx % ringSize)
	descs(first)
	g.offer(txQueue, first)
	g.nextTx += 2
}

// send queues one packet as two descriptors: header, then payload.
func (g *fakeGuest) send(h hdr, payload []byte) {
	h.length = uint32(len(payload))
	h.srcCID, h.dstCID, h.typ = uint64(g.cid), hostCID, typeStream
	if h.bufAlloc == 0 {
		h.bufAlloc = 64 << 10
	}
	g.sendRaw(func(first uint16) {
		base := txBufBase + uint64(first)*0x12000
		h.put(g.mem[base:])
		copy(g.mem[base+0x1000:], payload)
		if len(payload) == 0 {
			g.desc(txQueue, first, base, hdrSize, 0, 0)
			return
		}
		g.desc(txQueue, first, base, hdrSize, descNext, first+1)
		g.desc(txQueue, first+1, base+0x1000, uint32(len(payload)), 0, 0)
	})
	g.waitUsed(txQueue, uint16(g.nextTx/2))
}

func (g *fakeGuest) usedIdx(ring int) uint16 {
	return binary.LittleEndian.Uint16(g.mem[ringBase(ring)+0x200+2:])
}

func (g *fakeGuest) waitUsed(ring int, want uint16) {
	g.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for int16(g.usedIdx(ring)-want) < 0 {
		if time.Now().After(deadline) {
			g.t.Fatalf("ring %d: used index %d, want %d; log: %v", ring, g.usedIdx(ring), want, g.logs.lines)
		}
		time.Sleep(time.Millisecond)
	}
}

// recv returns the next packet the back-end wrote into an rx buffer, and
// posts the buffer again.
func (g *fakeGuest) recv() (hdr, []byte) {
	g.t.Helper()
	g.waitUsed(rxQueue, g.seen[rxQueue]+1)
	e := g.mem[ringBase(rxQueue)+0x200+4+8*uint64(g.seen[rxQueue]%ringSize):]
	id, n := binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:])
	g.seen[rxQueue]++
	addr := rxBufBase + uint64(id)*0x2000
	pkt := append([]byte(nil), g.mem[addr:addr+uint64(n)]...)
	g.postRx()
	if len(pkt) < hdrSize {
		g.t.Fatalf("rx packet of %d bytes", len(pkt))
	}
	h := parseHdr(pkt)
	return h, pkt[hdrSize : hdrSize+int(h.length)]
}

func (g *fakeGuest) expect(op uint16) (hdr, []byte) {
	g.t.Helper()
	h, p := g.recv()
	if h.op != op {
		g.t.Fatalf("rx op %d (flags %d), want %d", h.op, h.flags, op)
	}
	if h.srcCID != hostCID || h.dstCID != uint64(g.cid) {
		g.t.Fatalf("rx from cid %d to %d", h.srcCID, h.dstCID)
	}
	return h, p
}

// expectFor skips credit updates and packets for other guest ports (resets
// of earlier connections) and returns the next one for guestPort.
func (g *fakeGuest) expectFor(op uint16, guestPort uint32) hdr {
	g.t.Helper()
	for {
		h, _ := g.recv()
		if h.dstPort != guestPort || h.op == opCreditUpdate && op != opCreditUpdate {
			continue
		}
		if h.op != op {
			g.t.Fatalf("rx op %d for port %d, want %d", h.op, guestPort, op)
		}
		return h
	}
}

// serveHybrid makes the device accept host clients on its hybrid socket.
func (g *fakeGuest) serveHybrid() {
	g.t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: g.d.cfg.UDS, Net: "unix"})
	if err != nil {
		g.t.Fatal(err)
	}
	go g.d.acceptHybrid(l)
	g.t.Cleanup(func() { l.Close() })
}

// dialHost connects the guest's port from to host port to, served by a
// unix listener at <uds>_<to>, and returns the RESPONSE and the host's end.
// bufAlloc is the guest's receive buffer (0: the default).
func (g *fakeGuest) dialHost(from, to, bufAlloc uint32) (hdr, net.Conn) {
	g.t.Helper()
	l, err := net.Listen("unix", fmt.Sprintf("%s_%d", g.d.cfg.UDS, to))
	if err != nil {
		g.t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); accepted <- c }()
	g.send(hdr{srcPort: from, dstPort: to, op: opRequest, bufAlloc: bufAlloc}, nil)
	h, _ := g.expect(opResponse)
	return h, <-accepted
}

// A guest connection to host port P reaches the unix socket <uds>_P, both
// ways, and a close on either side ends it.
func TestGuestConnectsToHost(t *testing.T) {
	g := newFakeGuest(t)
	h, host := g.dialHost(50000, 1026, 0)
	defer host.Close()
	if h.srcPort != 1026 || h.dstPort != 50000 || h.bufAlloc != bufAlloc {
		t.Errorf("response %+v", h)
	}
	g.send(hdr{srcPort: 50000, dstPort: 1026, op: opRW}, []byte("hello host"))
	buf := make([]byte, 64)
	host.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := host.Read(buf)
	if err != nil || string(buf[:n]) != "hello host" {
		t.Fatalf("host read %q, %v", buf[:n], err)
	}
	host.Write([]byte("hello guest"))
	h, p := g.expect(opRW)
	if string(p) != "hello guest" || h.fwdCount != uint32(len("hello host")) {
		t.Errorf("guest got %q with fwd_cnt %d", p, h.fwdCount)
	}
	host.Close()
	if h, _ := g.expect(opShutdown); h.flags&shutdownSend == 0 {
		t.Errorf("shutdown flags %d", h.flags)
	}
	g.send(hdr{srcPort: 50000, dstPort: 1026, op: opShutdown, flags: shutdownSend | shutdownRecv}, nil)
	g.expect(opRst)
}

// A guest connection to a host port nobody serves is refused.
func TestGuestConnectRefused(t *testing.T) {
	g := newFakeGuest(t)
	g.send(hdr{srcPort: 50001, dstPort: 7777, op: opRequest}, nil)
	g.expect(opRst)
}

// "CONNECT <port>" on the hybrid socket becomes a REQUEST to the guest, and
// its RESPONSE an "OK <host port>" line; a refusal closes the client.
func TestHostConnectsToGuest(t *testing.T) {
	g := newFakeGuest(t)
	g.serveHybrid()

	c, err := net.Dial("unix", g.d.cfg.UDS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("CONNECT 1024\n"))
	req, _ := g.expect(opRequest)
	if req.dstPort != 1024 {
		t.Fatalf("request to port %d", req.dstPort)
	}
	g.send(hdr{srcPort: 1024, dstPort: req.srcPort, op: opResponse}, nil)
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil || line != fmt.Sprintf("OK %d\n", req.srcPort) {
		t.Fatalf("client got %q, %v", line, err)
	}
	g.send(hdr{srcPort: 1024, dstPort: req.srcPort, op: opRW}, []byte("ready\n"))
	if s, err := r.ReadString('\n'); err != nil || s != "ready\n" {
		t.Fatalf("client read %q, %v", s, err)
	}

	refused, err := net.Dial("unix", g.d.cfg.UDS)
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	refused.Write([]byte("CONNECT 9\n"))
	req, _ = g.expect(opRequest)
	g.send(hdr{srcPort: 9, dstPort: req.srcPort, op: opRst}, nil)
	refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := refused.Read(make([]byte, 8)); err == nil {
		t.Errorf("refused client read %d bytes, want EOF", n)
	}
}

// A host client that gives up before the guest answers (a dial's deadline)
// costs the guest an RST, and the device goes on (vhost-device-vsock 0.3.0
// panicked there).
func TestAbandonedConnect(t *testing.T) {
	g := newFakeGuest(t)
	g.serveHybrid()
	c, _ := net.Dial("unix", g.d.cfg.UDS)
	c.Write([]byte("CONNECT 1024\n"))
	req, _ := g.expect(opRequest)
	c.Close()
	time.Sleep(20 * time.Millisecond)
	g.send(hdr{srcPort: 1024, dstPort: req.srcPort, op: opResponse}, nil)
	g.expectFor(opRst, 1024)
	// Still serving.
	g.send(hdr{srcPort: 50002, dstPort: 7777, op: opRequest}, nil)
	g.expectFor(opRst, 50002)
}

// Hostile guests: descriptors outside its memory, looping chains, a length
// field larger than the packet, a foreign source CID and data beyond the
// credit it was given. Each is refused without touching memory it does not
// own, and the device keeps serving.
func TestHostileGuest(t *testing.T) {
	g := newFakeGuest(t)
	alive := func(port uint32) {
		t.Helper()
		g.send(hdr{srcPort: port, dstPort: 7777, op: opRequest}, nil)
		g.expectFor(opRst, port)
	}
	// A descriptor past the end of guest memory.
	g.sendRaw(func(first uint16) { g.desc(txQueue, first, memSize-10, hdrSize, 0, 0) })
	g.waitUsed(txQueue, uint16(g.nextTx/2))
	if !g.logs.has("outside guest memory") {
		t.Errorf("out-of-memory descriptor not reported: %v", g.logs.lines)
	}
	alive(60001)
	// A chain that loops on itself.
	g.sendRaw(func(first uint16) { g.desc(txQueue, first, txBufBase, hdrSize, descNext, first) })
	g.waitUsed(txQueue, uint16(g.nextTx/2))
	if !g.logs.has("descriptor chain") {
		t.Errorf("looping chain not reported: %v", g.logs.lines)
	}
	alive(60002)
	// A next index past the ring.
	g.sendRaw(func(first uint16) { g.desc(txQueue, first, txBufBase, hdrSize, descNext, 1000) })
	g.waitUsed(txQueue, uint16(g.nextTx/2))
	alive(60003)
	// A header announcing more payload than the chain carries.
	g.sendRaw(func(first uint16) {
		base := txBufBase + uint64(first)*0x12000
		hdr{srcCID: uint64(g.cid), dstCID: hostCID, srcPort: 1, dstPort: 2, length: 4096, typ: typeStream, op: opRW}.put(g.mem[base:])
		g.desc(txQueue, first, base, hdrSize+16, 0, 0)
	})
	g.waitUsed(txQueue, uint16(g.nextTx/2))
	if !g.logs.has("announces 4096 payload bytes") {
		t.Errorf("short packet not reported: %v", g.logs.lines)
	}
	alive(60004)
	// Another CID as source: dropped, no answer at all.
	g.sendRaw(func(first uint16) {
		base := txBufBase + uint64(first)*0x12000
		hdr{srcCID: 99, dstCID: hostCID, srcPort: 1, dstPort: 2, typ: typeStream, op: opRequest}.put(g.mem[base:])
		g.desc(txQueue, first, base, hdrSize, 0, 0)
	})
	g.waitUsed(txQueue, uint16(g.nextTx/2))
	alive(60005) // the next rx packet is this one's RST, not an answer to cid 99

	// Data beyond the credit the host gave: the connection is reset.
	l, err := net.Listen("unix", g.d.cfg.UDS+"_1026")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(2 * time.Second) // reads nothing
		}
	}()
	g.send(hdr{srcPort: 50010, dstPort: 1026, op: opRequest}, nil)
	g.expect(opResponse)
	big := make([]byte, maxPacket)
	// The host socket is not read: its buffer, the write in flight and
	// the connection's bufAlloc bytes fill, then the next packet overruns.
	for i := 0; i < 40; i++ {
		g.send(hdr{srcPort: 50010, dstPort: 1026, op: opRW}, big)
	}
	for {
		h, _ := g.recv()
		if h.op == opRst && h.dstPort == 50010 {
			break
		}
		if h.op != opCreditUpdate {
			t.Fatalf("op %d while the guest overran its credit", h.op)
		}
	}
	if !g.logs.has("past its credit") {
		t.Errorf("credit overrun not reported: %v", g.logs.lines)
	}
	alive(60006)
}

// The host never sends more than the guest's credit allows.
func TestHostRespectsGuestCredit(t *testing.T) {
	g := newFakeGuest(t)
	_, host := g.dialHost(50020, 1026, 1000)
	defer host.Close()
	go host.Write(make([]byte, 5000))
	got := 0
	for got < 1000 {
		_, p := g.expect(opRW)
		got += len(p)
	}
	if got != 1000 {
		t.Fatalf("guest got %d bytes with a credit of 1000", got)
	}
	time.Sleep(50 * time.Millisecond)
	if u := g.usedIdx(rxQueue); u != g.seen[rxQueue] {
		t.Fatalf("host sent past the credit (%d rx buffers used, %d read)", u, g.seen[rxQueue])
	}
	// The guest read 1000 bytes: its fwd_cnt frees the rest.
	g.send(hdr{srcPort: 50020, dstPort: 1026, op: opCreditUpdate, bufAlloc: 1000, fwdCount: 1000}, nil)
	_, p := g.expect(opRW)
	if len(p) == 0 || len(p) > 1000 {
		t.Errorf("after the credit update: %d bytes", len(p))
	}
}

// Bad memory tables and vring settings from the front-end are errors.
func TestFrontEndBadSettings(t *testing.T) {
	d := newDevice(Config{GuestCID: 3, UDS: filepath.Join(t.TempDir(), "v")})
	defer d.close()
	fd, _ := unix.MemfdCreate("m", unix.MFD_CLOEXEC)
	defer unix.Close(fd)
	unix.Ftruncate(fd, 1<<20)
	table := func(n uint32, size uint64) []byte {
		b := make([]byte, 8+32)
		binary.LittleEndian.PutUint32(b, n)
		binary.LittleEndian.PutUint64(b[16:], size)
		return b
	}
	dup := func() []int { f, _ := unix.Dup(fd); return []int{f} }
	if err := d.setMemTable(table(0, 1<<20), dup()); err == nil {
		t.Error("a table of 0 regions accepted")
	}
	if err := d.setMemTable(table(2, 1<<20), dup()); err == nil {
		t.Error("2 regions with one fd accepted")
	}
	if err := d.setMemTable(table(1, 0), dup()); err == nil {
		t.Error("a region of 0 bytes accepted")
	}
	if err := d.setVringState(reqSetVringNum, 0, 100); err == nil {
		t.Error("a ring of 100 entries (not a power of two) accepted")
	}
	if err := d.setVringState(reqSetVringNum, 5, 8); err == nil {
		t.Error("ring 5 of a 2-ring device accepted")
	}
	must(t, d.setMemTable(table(1, 1<<20), dup()))
	must(t, d.setVringState(reqSetVringNum, 0, 8))
	if err := d.setVringAddr(0, 1<<40, 0, 0); err == nil || !strings.Contains(err.Error(), "outside guest memory") {
		t.Errorf("a ring outside guest memory: %v", err)
	}
	if _, err := os.Stat(d.cfg.UDS); err == nil {
		t.Error("device created its socket without Listen")
	}
}

// A guest that never takes what the host sends, or opens connection after
// connection, meets bounds rather than growing the shim.
func TestGuestFloodBounded(t *testing.T) {
	g := newFakeGuest(t)
	l, err := net.Listen("unix", g.d.cfg.UDS+"_1026")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// Its rx ring holds 8 buffers: everything past them queues, up to the bound.
	g.d.mu.Lock()
	for i := range maxCtrls + 100 {
		g.d.send(key{host: 7777, guest: uint32(i)}, opRst, 0)
	}
	n := len(g.d.ctrls)
	g.d.mu.Unlock()
	if n > maxCtrls {
		t.Errorf("%d control packets queued, bound %d", n, maxCtrls)
	}
	if !g.logs.has("dropping more") {
		t.Error("the drop was not reported")
	}
	g.d.mu.Lock()
	g.d.ctrls = nil
	for i := range maxConns {
		g.d.conns[key{host: 1026, guest: uint32(100000 + i)}] = newConn(key{}, false)
	}
	g.d.mu.Unlock()
	g.send(hdr{srcPort: 1, dstPort: 1026, op: opRequest}, nil)
	g.expectFor(opRst, 1)
	if !g.logs.has("refusing port 1026") {
		t.Errorf("connection flood not refused: %v", g.logs.lines)
	}
}

// A guest that writes and closes at once (an exec's output, then its
// end) has every byte reach the host before the end does.
func TestGuestCloseDeliversData(t *testing.T) {
	g := newFakeGuest(t)
	_, host := g.dialHost(50030, 1026, 0)
	defer host.Close()
	chunk := make([]byte, maxPacket)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for range 3 {
		g.send(hdr{srcPort: 50030, dstPort: 1026, op: opRW}, chunk)
	}
	g.send(hdr{srcPort: 50030, dstPort: 1026, op: opShutdown, flags: shutdownSend | shutdownRecv}, nil)
	host.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(host)
	if err != nil || len(got) != 3*maxPacket {
		t.Fatalf("host read %d of %d bytes before the end: %v", len(got), 3*maxPacket, err)
	}
	g.expectFor(opRst, 50030)
}
