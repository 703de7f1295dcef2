package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// region is one piece of guest memory mapped from the fd QEMU sent.
type region struct {
	gpa  uint64 // guest physical address of data[0]
	qva  uint64 // QEMU's virtual address of data[0] (vring addresses use it)
	data []byte
	mmap []byte // the whole mapping, for Munmap
}

// memory is the guest's memory as this process maps it. Every address the
// guest hands over is checked against it: a guest (or a front-end) cannot
// make the back-end read or write outside what was shared.
type memory struct{ regions []region }

func mapMemTable(p []byte, fds []int) (*memory, error) {
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if len(p) < 8 {
		return nil, fmt.Errorf("memory table: %d bytes", len(p))
	}
	n := int(binary.LittleEndian.Uint32(p))
	if n < 1 || n > maxRegions || len(p) < 8+32*n || len(fds) != n {
		return nil, fmt.Errorf("memory table: %d regions, %d fds, %d bytes", n, len(fds), len(p))
	}
	m := &memory{}
	for i := 0; i < n; i++ {
		e := p[8+32*i:]
		gpa, size := binary.LittleEndian.Uint64(e[0:]), binary.LittleEndian.Uint64(e[8:])
		qva, off := binary.LittleEndian.Uint64(e[16:]), binary.LittleEndian.Uint64(e[24:])
		if size == 0 || size > 1<<40 || off > 1<<40 || gpa+size < gpa {
			m.unmap()
			return nil, fmt.Errorf("memory region %d: size %#x at offset %#x", i, size, off)
		}
		mm, err := unix.Mmap(fds[i], 0, int(off+size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			m.unmap()
			return nil, fmt.Errorf("memory region %d: mmap %#x bytes: %w", i, off+size, err)
		}
		m.regions = append(m.regions, region{gpa: gpa, qva: qva, data: mm[off : off+size], mmap: mm})
	}
	return m, nil
}

func (m *memory) unmap() {
	if m == nil {
		return
	}
	for _, r := range m.regions {
		unix.Munmap(r.mmap)
	}
	m.regions = nil
}

var errAddr = errors.New("address outside guest memory")

// guest returns n bytes at guest physical address gpa.
func (m *memory) guest(gpa, n uint64) ([]byte, error) {
	if b := m.find(gpa, n, func(r region) uint64 { return r.gpa }); b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("%w: %#x+%#x", errAddr, gpa, n)
}

// front returns n bytes at the front-end's virtual address qva.
func (m *memory) front(qva, n uint64) ([]byte, error) {
	if b := m.find(qva, n, func(r region) uint64 { return r.qva }); b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("%w: front-end address %#x+%#x", errAddr, qva, n)
}

// find returns the n bytes at addr of the region that holds all of them,
// base giving each region's start in addr's address space.
func (m *memory) find(addr, n uint64, base func(region) uint64) []byte {
	for _, r := range m.regions {
		start, size := base(r), uint64(len(r.data))
		if addr >= start && addr-start <= size && n <= size-(addr-start) {
			o := addr - start
			return r.data[o : o+n : o+n]
		}
	}
	return nil
}

// Descriptor flags (virtio 1.1, 2.7.5).
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4
)

// vring is one split virtqueue (virtio 1.1, 2.7). The device goroutine is
// its only user once started.
type vring struct {
	num                 uint16
	descAddr, availAddr uint64 // front-end addresses from SET_VRING_ADDR
	usedAddr            uint64
	desc, avail, used   []byte
	lastAvail           uint16
	usedIdx             uint16
	kick, call          *os.File
	enabled, started    bool
	addrSet             bool
}

// ready reports whether the ring can be used: addresses, size, kick fd.
func (v *vring) ready() bool { return v.started && v.enabled && v.desc != nil && v.kick != nil }

func (v *vring) resolve(m *memory) error {
	if !v.addrSet || v.num == 0 {
		return nil
	}
	n := uint64(v.num)
	var err error
	if v.desc, err = m.front(v.descAddr, 16*n); err != nil {
		return err
	}
	if v.avail, err = m.front(v.availAddr, 4+2*n); err != nil {
		return err
	}
	if v.used, err = m.front(v.usedAddr, 4+8*n); err != nil {
		return err
	}
	if uintptr(unsafe.Pointer(&v.avail[0]))%4 != 0 || uintptr(unsafe.Pointer(&v.used[0]))%4 != 0 {
		return fmt.Errorf("vring not 4-byte aligned")
	}
	return nil
}

// availIdx is the driver's next free avail slot, read with a barrier so
// the ring entries before it are visible.
func (v *vring) availIdx() uint16 {
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&v.avail[0]))) >> 16)
}

// pop returns the head of the next available chain, if any.
func (v *vring) pop() (uint16, bool) {
	if v.lastAvail == v.availIdx() {
		return 0, false
	}
	head := binary.LittleEndian.Uint16(v.avail[4+2*uint64(v.lastAvail%v.num):])
	v.lastAvail++
	return head, true
}

// push puts a used chain back and publishes the new used index.
func (v *vring) push(head uint16, written uint32) {
	e := v.used[4+8*uint64(v.usedIdx%v.num):]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], written)
	v.usedIdx++
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&v.used[0])), uint32(v.usedIdx)<<16)
}

// notify interrupts the driver.
func (v *vring) notify() {
	if v.call != nil {
		var one [8]byte
		one[0] = 1
		v.call.Write(one[:])
	}
}

// buf is one descriptor's memory.
type buf struct {
	data     []byte
	writable bool
}

// chain walks the descriptor chain from head. A chain that loops, is
// longer than the ring, uses indirect descriptors (not negotiated) or
// points outside guest memory is an error.
func (v *vring) chain(m *memory, head uint16) ([]buf, error) {
	var out []buf
	i := head
	for n := 0; ; n++ {
		if i >= v.num || n >= int(v.num) {
			return nil, fmt.Errorf("descriptor chain from %d: index %d of %d", head, i, v.num)
		}
		d := v.desc[16*uint64(i):]
		addr, length := binary.LittleEndian.Uint64(d[0:]), binary.LittleEndian.Uint32(d[8:])
		flags, next := binary.LittleEndian.Uint16(d[12:]), binary.LittleEndian.Uint16(d[14:])
		if flags&descIndirect != 0 {
			return nil, fmt.Errorf("indirect descriptor (not negotiated)")
		}
		data, err := m.guest(addr, uint64(length))
		if err != nil {
			return nil, err
		}
		out = append(out, buf{data: data, writable: flags&descWrite != 0})
		if flags&descNext == 0 {
			return out, nil
		}
		i = next
	}
}
