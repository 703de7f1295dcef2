package vsock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"unsafe"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// DefaultVhostDevice is the kernel vhost-vsock device node.
const DefaultVhostDevice = "/dev/vhost-vsock"

// DialVhost connects to guest port of the VM with context id cid over
// AF_VSOCK (kernel vhost-vsock), retrying until ctx is done.
func DialVhost(ctx context.Context, cid, port uint32) (net.Conn, error) {
	return Dialer{}.DialVhost(ctx, cid, port)
}

// DialVhost is the package-level DialVhost with d's retry policy.
func (d Dialer) DialVhost(ctx context.Context, cid, port uint32) (net.Conn, error) {
	what := fmt.Sprintf("vsock cid %d port %d", cid, port)
	return d.retry(ctx, what, func(ctx context.Context) (net.Conn, error) {
		// DialContext ends a connect that the kernel would otherwise hold
		// for its 2s timeout when ctx ends first.
		c, err := vsock.DialContext(ctx, cid, port, nil)
		if err != nil {
			if transient(err) {
				return nil, notReady{err}
			}
			return nil, err
		}
		return c, nil
	})
}

// MinGuestCID is the lowest CID a guest may have: 0-2 are reserved
// (hypervisor, local, host).
const MinGuestCID = 3

// CID is a guest context id reserved on the host's vhost-vsock device. The
// reservation lives as long as File is open: hand File to QEMU
// (vhost-vsock-pci,vhostfd=N) so no other VM can take the CID between
// choosing it and QEMU starting, then Close it in the parent.
type CID struct {
	ID   uint32
	File *os.File
}

// Close releases the host's handle on the device (QEMU keeps its own).
func (c *CID) Close() error {
	if c == nil || c.File == nil {
		return nil
	}
	return c.File.Close()
}

// vhostVsockSetGuestCID is VHOST_VSOCK_SET_GUEST_CID, _IOW(0xAF, 0x60, __u64).
const vhostVsockSetGuestCID = 0x4008AF60

// ReserveCID opens the vhost-vsock device and claims a free CID on it. CIDs
// are picked at random so concurrent shims rarely collide; a collision is
// EADDRINUSE from the kernel and the next candidate is tried.
func ReserveCID(ctx context.Context, device string) (*CID, error) {
	if device == "" {
		device = DefaultVhostDevice
	}
	f, err := os.OpenFile(device, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reserve vsock CID: %w", err)
	}
	id, err := pickCID(ctx, rand.Uint32, func(cid uint32) error {
		v := uint64(cid)
		sc, err := f.SyscallConn()
		if err != nil {
			return err
		}
		var ierr error
		if err := sc.Control(func(fd uintptr) {
			_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, vhostVsockSetGuestCID, uintptr(unsafe.Pointer(&v)))
			if e != 0 {
				ierr = e
			}
		}); err != nil {
			return err
		}
		return ierr
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reserve vsock CID on %s: %w", device, err)
	}
	return &CID{ID: id, File: f}, nil
}

// maxCIDAttempts bounds pickCID; with random 32-bit candidates, running out
// means something other than collisions is wrong.
const maxCIDAttempts = 64

// pickCID tries random candidates with set until one is not in use.
func pickCID(ctx context.Context, random func() uint32, set func(uint32) error) (uint32, error) {
	var last error
	for range maxCIDAttempts {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		cid := random()
		// Keep clear of the reserved CIDs and of VMADDR_CID_ANY (-1).
		if cid < MinGuestCID || cid == ^uint32(0) {
			continue
		}
		err := set(cid)
		if err == nil {
			return cid, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return 0, fmt.Errorf("set guest CID %d: %w", cid, err)
		}
		last = err
	}
	return 0, fmt.Errorf("no free CID after %d attempts: %w", maxCIDAttempts, last)
}
