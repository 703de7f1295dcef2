//go:build linux

// Package scratch turns the host's scratch disk into encrypted swap for the
// guest: a dm-crypt mapping (AES-256-XTS) under a key made here from the
// guest's own randomness, which never leaves the guest's memory, and swap
// on top. The image store's tmpfs can then hold more than the guest's
// memory: pages it does not touch move to the disk, which the host sees
// only as ciphertext; on a new boot the key is gone and so is the content.
//
// Swap rather than a file system: a file system would have to be made at
// every pod start through the cipher (ext2's inode tables alone are tens of
// MB for a few GB, seconds under emulation), where swap needs one header
// page; and tmpfs already has what the layer store needs (trusted xattrs,
// whiteout devices).
package scratch

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MapName is the dm-crypt mapping's name.
const MapName = "coco-scratch"

// cipher is the dm-crypt cipher spec; its key is 64 bytes (two AES-256
// keys, XTS).
const (
	cipher  = "aes-xts-plain64"
	keySize = 64
)

// Encrypt maps dev through dm-crypt as name under a fresh key, as Swap
// does, and returns the mapping's device node and size in bytes: what is
// written there reaches the host as ciphertext only, and reads of blocks
// never written through it are noise.
func Encrypt(name, dev string) (string, int64, error) {
	sectors, err := deviceSectors(dev)
	if err != nil {
		return "", 0, err
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return "", 0, err
	}
	hexKey := []byte(hex.EncodeToString(key))
	clear(key)
	node, err := mapCrypt(name, dev, sectors, hexKey)
	clear(hexKey)
	if err != nil {
		return "", 0, fmt.Errorf("disk %s: dm-crypt: %w", dev, err)
	}
	return node, sectors * 512, nil
}

// Swap maps dev (a block device node, e.g. /dev/vdc) through dm-crypt under
// a fresh key, makes the mapping swap and turns it on. It returns the swap's
// size in bytes.
func Swap(dev string) (int64, error) {
	sectors, err := deviceSectors(dev)
	if err != nil {
		return 0, err
	}
	if sectors < 2*pageSectors {
		return 0, fmt.Errorf("scratch disk %s: %d sectors, too small for swap", dev, sectors)
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return 0, err
	}
	hexKey := []byte(hex.EncodeToString(key))
	clear(key)
	node, err := mapCrypt(MapName, dev, sectors, hexKey)
	clear(hexKey)
	if err != nil {
		return 0, fmt.Errorf("scratch disk %s: dm-crypt: %w", dev, err)
	}
	size := sectors * 512
	if err := writeSwapHeader(node, size); err != nil {
		return 0, fmt.Errorf("scratch disk %s: swap header: %w", dev, err)
	}
	p, err := unix.BytePtrFromString(node)
	if err != nil {
		return 0, err
	}
	if _, _, errno := unix.Syscall(unix.SYS_SWAPON, uintptr(unsafe.Pointer(p)), 0, 0); errno != 0 {
		return 0, fmt.Errorf("scratch disk %s: swapon %s: %w", dev, node, errno)
	}
	return size - pageSize, nil
}

const (
	pageSize    = 4096
	pageSectors = pageSize / 512
)

// deviceSectors reads a block device's size in 512-byte sectors.
func deviceSectors(dev string) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(dev), "size"))
	if err != nil {
		return 0, fmt.Errorf("scratch disk %s: %w", dev, err)
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// mapCrypt creates the dm-crypt mapping name over dev and returns its
// device node. The key travels in the table only, as hex.
func mapCrypt(name, dev string, sectors int64, hexKey []byte) (string, error) {
	ctl, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("%w (is dm-mod loaded?)", err)
	}
	defer ctl.Close()
	hdr, err := dmIoctl(ctl, unix.DM_DEV_CREATE, name, 0, nil)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", name, err)
	}
	params := append([]byte(cipher+" "), hexKey...)
	params = append(params, fmt.Sprintf(" 0 %s 0", dev)...)
	table := cryptTarget(sectors, params)
	clear(params)
	_, err = dmIoctl(ctl, unix.DM_TABLE_LOAD, name, 1, table)
	clear(table)
	if err == nil {
		_, err = dmIoctl(ctl, unix.DM_DEV_SUSPEND, name, 0, nil) // no SUSPEND flag: resume
	}
	if err != nil {
		dmIoctl(ctl, unix.DM_DEV_REMOVE, name, 0, nil)
		return "", fmt.Errorf("load %s: %w (is dm-crypt loaded?)", name, err)
	}
	minor := unix.Minor(hdr.Dev)
	node := fmt.Sprintf("/dev/dm-%d", minor)
	return node, waitNode(node)
}

// cryptTarget is one dm_target_spec of type crypt followed by its
// NUL-terminated parameters, padded to 8 bytes.
func cryptTarget(sectors int64, params []byte) []byte {
	spec := unix.DmTargetSpec{Length: uint64(sectors)}
	copy(spec.Target_type[:], "crypt")
	size := int(unsafe.Sizeof(spec)) + len(params) + 1
	size = (size + 7) &^ 7
	spec.Next = uint32(size)
	var b bytes.Buffer
	binary.Write(&b, binary.NativeEndian, &spec)
	b.Write(params)
	b.Write(make([]byte, size-b.Len()))
	return b.Bytes()
}

// dmIoctl runs one device-mapper ioctl on name with data after the
// header, and returns the header the kernel wrote back.
func dmIoctl(ctl *os.File, cmd uintptr, name string, targets uint32, data []byte) (*unix.DmIoctl, error) {
	buf := make([]byte, unix.SizeofDmIoctl+len(data)+16*1024)
	hdr := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	hdr.Version = [3]uint32{unix.DM_VERSION_MAJOR, 0, 0}
	hdr.Data_size = uint32(len(buf))
	hdr.Data_start = unix.SizeofDmIoctl
	hdr.Target_count = targets
	copy(hdr.Name[:len(hdr.Name)-1], name)
	copy(buf[unix.SizeofDmIoctl:], data)
	defer clear(buf[unix.SizeofDmIoctl:])
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return nil, errno
	}
	out := *hdr
	return &out, nil
}

// waitNode waits for devtmpfs to show the mapping's node.
func waitNode(node string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(node); err == nil {
			return nil
		} else if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return fmt.Errorf("device node %s: %w", node, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeSwapHeader writes a version-1 swap header ("SWAPSPACE2") for a
// device of size bytes in its first page.
func writeSwapHeader(node string, size int64) error {
	page := make([]byte, pageSize)
	// union swap_header.info at offset 1024: version, last_page,
	// nr_badpages, then uuid and label (left zero).
	binary.NativeEndian.PutUint32(page[1024:], 1)
	binary.NativeEndian.PutUint32(page[1028:], uint32(size/pageSize-1))
	copy(page[pageSize-10:], "SWAPSPACE2")
	f, err := os.OpenFile(node, os.O_WRONLY|os.O_SYNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(page, 0); err != nil {
		return err
	}
	return f.Sync()
}
