// Package vmlinux pulls the uncompressed kernel ELF out of an x86 bzImage.
//
// Under software emulation most of a boot is the kernel decompressing
// itself; the ELF inside Debian's bzImage has a Xen PVH entry note, so QEMU
// can boot it directly with -kernel and skip that work (DESIGN §3.8).
package vmlinux

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os/exec"

	"github.com/klauspost/compress/zstd"
)

// Offsets in the x86 boot protocol header (Documentation/arch/x86/boot.rst).
const (
	offSetupSects    = 0x1f1
	offHeaderMagic   = 0x202 // "HdrS"
	offVersion       = 0x206
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
)

var (
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicGzip = []byte{0x1f, 0x8b}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Extract returns the vmlinux ELF inside bzImage. It locates the compressed
// payload through the boot header (payload_offset/payload_length, boot
// protocol 2.08+), decompresses it (xz through the xz tool; gzip and zstd in
// Go) and checks that the result is an x86-64 ELF with a PVH entry note.
func Extract(bzImage []byte) ([]byte, error) {
	payload, err := Payload(bzImage)
	if err != nil {
		return nil, err
	}
	var out []byte
	switch {
	case bytes.HasPrefix(payload, magicXZ):
		// --single-stream stops at the end of the xz stream and ignores the
		// 4-byte size the kernel build appends after it.
		cmd := exec.Command("xz", "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(payload)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("vmlinux: xz: %w: %s (is xz-utils installed?)", err, bytes.TrimSpace(stderr.Bytes()))
		}
	case bytes.HasPrefix(payload, magicGzip):
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, fmt.Errorf("vmlinux: gzip payload: %w", err)
		}
		zr.Multistream(false)
		if out, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("vmlinux: gzip payload: %w", err)
		}
	case bytes.HasPrefix(payload, magicZstd):
		zr, err := zstd.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, fmt.Errorf("vmlinux: zstd payload: %w", err)
		}
		defer zr.Close()
		if out, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("vmlinux: zstd payload: %w", err)
		}
	default:
		return nil, fmt.Errorf("vmlinux: payload compression not supported (first bytes % x): use an xz, gzip or zstd kernel", payload[:min(6, len(payload))])
	}
	if err := CheckPVH(out); err != nil {
		return nil, err
	}
	return out, nil
}

// Payload returns the compressed kernel inside bzImage.
func Payload(bz []byte) ([]byte, error) {
	if len(bz) < offPayloadLength+4 || string(bz[offHeaderMagic:offHeaderMagic+4]) != "HdrS" {
		return nil, fmt.Errorf("vmlinux: not an x86 bzImage (no HdrS boot header)")
	}
	le := binary.LittleEndian
	if v := le.Uint16(bz[offVersion:]); v < 0x208 {
		return nil, fmt.Errorf("vmlinux: boot protocol %d.%02d has no payload fields (need 2.08+)", v>>8, v&0xff)
	}
	setup := int(bz[offSetupSects])
	if setup == 0 {
		setup = 4 // the boot protocol's historical default
	}
	start := (setup+1)*512 + int(le.Uint32(bz[offPayloadOffset:]))
	end := start + int(le.Uint32(bz[offPayloadLength:]))
	if start >= end || end > len(bz) {
		return nil, fmt.Errorf("vmlinux: payload [%d,%d) outside the %d-byte image", start, end, len(bz))
	}
	return bz[start:end], nil
}

// xenElfnotePhys32Entry is the note type of the PVH 32-bit entry point.
const xenElfnotePhys32Entry = 18

// CheckPVH returns an error unless img is an x86-64 ELF with a "Xen" note
// of type XEN_ELFNOTE_PHYS32_ENTRY, which is what QEMU's -kernel needs to
// boot an ELF by PVH.
func CheckPVH(img []byte) error {
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return fmt.Errorf("vmlinux: decompressed kernel is not ELF: %w", err)
	}
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("vmlinux: kernel is for %v, not x86-64", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data, err := io.ReadAll(p.Open())
		if err != nil {
			return fmt.Errorf("vmlinux: reading notes: %w", err)
		}
		if hasNote(data, "Xen", xenElfnotePhys32Entry, f.ByteOrder) {
			return nil
		}
	}
	return fmt.Errorf("vmlinux: kernel has no PVH entry note (built without CONFIG_PVH=y?): boot the bzImage instead")
}

// hasNote walks ELF notes: namesz, descsz, type, name (4-aligned), desc (4-aligned).
func hasNote(data []byte, name string, typ uint32, bo binary.ByteOrder) bool {
	align := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(data) >= 12 {
		namesz, descsz, t := bo.Uint32(data), bo.Uint32(data[4:]), bo.Uint32(data[8:])
		data = data[12:]
		if uint64(align(namesz))+uint64(align(descsz)) > uint64(len(data)) {
			return false
		}
		n := string(bytes.TrimRight(data[:namesz], "\x00"))
		if n == name && t == typ {
			return true
		}
		data = data[align(namesz)+align(descsz):]
	}
	return false
}
