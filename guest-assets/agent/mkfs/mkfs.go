// Package mkfs writes an empty ext2-layout file system (revision 1,
// filetype and uninit_bg) onto a block device, for a disk-backed emptyDir.
// The guest has no mke2fs, and the device is often a fresh dm-crypt
// mapping whose unwritten blocks read as noise, so everything the kernel
// reads before writing (superblocks, checksummed group descriptors,
// bitmaps, the inode table block of the reserved inodes, the two
// directories) is written here. The rest of the inode tables is marked
// unused in each descriptor (bg_itable_unused), which the kernel and
// e2fsck trust under uninit_bg: writing them would cost 1 MiB per 128 MiB
// of disk through the cipher at every pod start, and as much of the host's
// disk. Mount it as ext4 with noinit_itable, or the kernel zeroes the
// tables in the background after all.
//
// One superblock and descriptor copy per group (no sparse_super) keeps the
// layout the same in every group; at a few blocks per 128 MiB it costs
// nothing worth a feature.
package mkfs

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
)

const (
	blockSize      = 4096
	blocksPerGroup = blockSize * 8 // one bitmap block
	inodeSize      = 128
	bytesPerInode  = 16384
	firstIno       = 11 // lost+found; 1-10 are reserved
	rootIno        = 2
)

// Layout is what Format wrote, for tests and messages.
type Layout struct {
	Blocks, Inodes, Groups, InodesPerGroup uint32
}

// Format writes the file system over the first size bytes of dev (at
// least 1 MiB). Root's mode is 0777, as the kubelet makes an emptyDir.
func Format(dev io.WriterAt, size int64) (Layout, error) {
	if size < 1<<20 {
		return Layout{}, fmt.Errorf("mkfs: %d bytes: want at least 1 MiB", size)
	}
	if size/blockSize > 1<<32-1 {
		return Layout{}, fmt.Errorf("mkfs: %d bytes: more than ext2 holds at %d-byte blocks", size, blockSize)
	}
	blocks := uint32(size / blockSize)
	groups := (blocks + blocksPerGroup - 1) / blocksPerGroup
	ipb := uint32(blockSize / inodeSize)
	// One inode per 16 KiB, at least enough for the reserved ones, a
	// whole number of inode table blocks per group.
	ipg := uint32(uint64(blocks)*blockSize/bytesPerInode) / groups
	ipg = max((ipg+ipb-1)/ipb*ipb, ipb)
	ipg = min(ipg, blocksPerGroup)
	itb := ipg / ipb
	gdtBlocks := (groups*32 + blockSize - 1) / blockSize
	overhead := 1 + gdtBlocks + 2 + itb
	// A last group too small for its own metadata is left out.
	if last := blocks - (groups-1)*blocksPerGroup; last < overhead+8 {
		if groups == 1 {
			return Layout{}, fmt.Errorf("mkfs: %d bytes leave no room for data", size)
		}
		blocks -= last
		groups--
	}
	l := Layout{Blocks: blocks, Inodes: ipg * groups, Groups: groups, InodesPerGroup: ipg}

	gd := make([]byte, gdtBlocks*blockSize)
	var freeBlocks, freeInodes uint32
	zero := make([]byte, blockSize)
	for g := range groups {
		start := g * blocksPerGroup
		n := min(blocksPerGroup, blocks-start)
		bbitmap, ibitmap, itable := start+1+gdtBlocks, start+2+gdtBlocks, start+3+gdtBlocks
		used := overhead
		usedInodes, dirs := uint32(0), uint32(0)
		if g == 0 {
			used += 2 // the root and lost+found directory blocks
			usedInodes, dirs = firstIno, 2
		}
		bb := make([]byte, blockSize)
		setBits(bb, 0, used)
		setBits(bb, n, blocksPerGroup) // past the end of a short last group
		ib := make([]byte, blockSize)
		setBits(ib, 0, usedInodes)
		setBits(ib, ipg, blockSize*8)
		if err := writeBlock(dev, bbitmap, bb); err != nil {
			return l, err
		}
		if err := writeBlock(dev, ibitmap, ib); err != nil {
			return l, err
		}
		// Only the block holding the reserved inodes and the two
		// directories; the rest of every table is unused (itable_unused
		// below, checksummed), never read by the kernel or e2fsck.
		if g == 0 {
			if err := writeBlock(dev, itable, zero); err != nil {
				return l, err
			}
		}
		d := gd[g*32:]
		le.PutUint32(d[0:], bbitmap)
		le.PutUint32(d[4:], ibitmap)
		le.PutUint32(d[8:], itable)
		le.PutUint16(d[12:], uint16(n-used))
		le.PutUint16(d[14:], uint16(ipg-usedInodes))
		le.PutUint16(d[16:], uint16(dirs))
		le.PutUint16(d[28:], uint16(ipg-usedInodes)) // bg_itable_unused
		freeBlocks += n - used
		freeInodes += ipg - usedInodes
	}

	var uuid [16]byte
	if _, err := rand.Read(uuid[:]); err != nil {
		return l, err
	}
	for g := range groups {
		le.PutUint16(gd[g*32+30:], descChecksum(uuid, g, gd[g*32:g*32+32]))
	}

	// The two directories, in group 0 right after its inode table.
	rootBlk, lfBlk := overhead, overhead+1
	itable0 := 3 + gdtBlocks
	root := dirBlock([]dirent{{rootIno, "."}, {rootIno, ".."}, {firstIno, "lost+found"}})
	lf := dirBlock([]dirent{{firstIno, "."}, {rootIno, ".."}})
	if err := writeBlock(dev, rootBlk, root); err != nil {
		return l, err
	}
	if err := writeBlock(dev, lfBlk, lf); err != nil {
		return l, err
	}
	if err := writeInode(dev, itable0, rootIno, 0o40777, 3, rootBlk); err != nil {
		return l, err
	}
	if err := writeInode(dev, itable0, firstIno, 0o40700, 2, lfBlk); err != nil {
		return l, err
	}

	for g := range groups {
		start := g * blocksPerGroup
		sb := superblock(l, freeBlocks, freeInodes, uint16(g), uuid)
		// Group 0's superblock sits 1024 bytes into block 0 (the boot
		// block); the copies start their group's first block.
		off := int64(start) * blockSize
		if g == 0 {
			off = 1024
		}
		if _, err := dev.WriteAt(sb, off); err != nil {
			return l, fmt.Errorf("mkfs: superblock of group %d: %w", g, err)
		}
		for b := range gdtBlocks {
			if err := writeBlock(dev, start+1+b, gd[b*blockSize:(b+1)*blockSize]); err != nil {
				return l, err
			}
		}
	}
	return l, nil
}

var le = binary.LittleEndian

func superblock(l Layout, freeBlocks, freeInodes uint32, group uint16, uuid [16]byte) []byte {
	s := make([]byte, 1024)
	le.PutUint32(s[0:], l.Inodes)
	le.PutUint32(s[4:], l.Blocks)
	le.PutUint32(s[12:], freeBlocks)
	le.PutUint32(s[16:], freeInodes)
	le.PutUint32(s[20:], 0) // first data block: 0 with 4 KiB blocks
	le.PutUint32(s[24:], 2) // log2(block size) - 10
	le.PutUint32(s[28:], 2)
	le.PutUint32(s[32:], blocksPerGroup)
	le.PutUint32(s[36:], blocksPerGroup)
	le.PutUint32(s[40:], l.InodesPerGroup)
	le.PutUint16(s[54:], 0xffff) // max mount count: no forced checks
	le.PutUint16(s[56:], 0xef53)
	le.PutUint16(s[58:], 1) // clean
	le.PutUint16(s[60:], 1) // on errors: continue
	le.PutUint32(s[76:], 1) // revision 1 (dynamic inode sizes)
	le.PutUint32(s[84:], firstIno)
	le.PutUint16(s[88:], inodeSize)
	le.PutUint16(s[90:], group)
	le.PutUint32(s[96:], 0x2)   // incompat: filetype in directory entries
	le.PutUint32(s[100:], 0x10) // ro_compat: group descriptor checksums (gdt_csum)
	copy(s[104:], uuid[:])
	return s
}

type dirent struct {
	ino  uint32
	name string
}

// dirBlock lays out entries, all directories, the last one spanning the
// rest of the block.
func dirBlock(ents []dirent) []byte {
	b := make([]byte, blockSize)
	off := 0
	for i, e := range ents {
		rec := (8 + len(e.name) + 3) &^ 3
		if i == len(ents)-1 {
			rec = blockSize - off
		}
		le.PutUint32(b[off:], e.ino)
		le.PutUint16(b[off+4:], uint16(rec))
		b[off+6] = byte(len(e.name))
		b[off+7] = 2 // directory
		copy(b[off+8:], e.name)
		off += rec
	}
	return b
}

// writeInode writes a one-block directory inode into group 0's table.
func writeInode(dev io.WriterAt, itable, ino uint32, mode, links uint16, block uint32) error {
	in := make([]byte, inodeSize)
	le.PutUint16(in[0:], mode)
	le.PutUint32(in[4:], blockSize)
	le.PutUint16(in[26:], links)
	le.PutUint32(in[28:], blockSize/512)
	le.PutUint32(in[40:], block)
	off := int64(itable)*blockSize + int64(ino-1)*inodeSize
	if _, err := dev.WriteAt(in, off); err != nil {
		return fmt.Errorf("mkfs: inode %d: %w", ino, err)
	}
	return nil
}

func writeBlock(dev io.WriterAt, n uint32, b []byte) error {
	if _, err := dev.WriteAt(b, int64(n)*blockSize); err != nil {
		return fmt.Errorf("mkfs: block %d: %w", n, err)
	}
	return nil
}

// setBits sets bits [from, to) of a bitmap block.
func setBits(b []byte, from, to uint32) {
	for i := from; i < to && i/8 < uint32(len(b)); i++ {
		b[i/8] |= 1 << (i % 8)
	}
}

// descChecksum is a group descriptor's bg_checksum under gdt_csum: CRC-16
// (the kernel's crc16, polynomial 0x8005 reflected) of the file system's
// UUID, the group number and the descriptor up to the checksum field.
func descChecksum(uuid [16]byte, group uint32, desc []byte) uint16 {
	var g [4]byte
	le.PutUint32(g[:], group)
	crc := crc16(0xffff, uuid[:])
	crc = crc16(crc, g[:])
	return crc16(crc, desc[:30])
}

func crc16(crc uint16, b []byte) uint16 {
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xa001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}
