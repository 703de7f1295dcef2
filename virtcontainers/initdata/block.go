package initdata

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/containerd/errdefs"
)

// Block image layout (kata runtime-rs initdata_block, read by the agent):
//
//	"initdata" (8 bytes) ‖ u64 little-endian gzip length ‖ gzip(TOML) ‖ zeros to a 512-byte boundary
const (
	blockMagic  = "initdata"
	blockHeader = len(blockMagic) + 8
	sectorSize  = 512
	// maxCompressed bounds the gzip length read from an untrusted header
	// before anything is allocated.
	maxCompressed = MaxSize + 1024
)

// BlockImage builds the raw disk image that carries init-data into the
// guest. raw is validated first so the host never ships a document the
// guest would refuse.
func BlockImage(raw []byte) ([]byte, error) {
	if _, err := Parse(raw); err != nil {
		return nil, err
	}
	gz := compress(raw)
	n := blockHeader + len(gz)
	n = (n + sectorSize - 1) / sectorSize * sectorSize
	img := make([]byte, n)
	copy(img, blockMagic)
	binary.LittleEndian.PutUint64(img[len(blockMagic):], uint64(len(gz)))
	copy(img[blockHeader:], gz)
	return img, nil
}

// WriteBlockImage writes the block image for raw to path (mode 0444): the
// file the hypervisor attaches read-only as the disk with ID "initdata".
func WriteBlockImage(path string, raw []byte) error {
	img, err := BlockImage(raw)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".initdata-*")
	if err != nil {
		return fmt.Errorf("init-data image: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(img); err != nil {
		tmp.Close()
		return fmt.Errorf("init-data image %s: %w", path, err)
	}
	if err := tmp.Chmod(0o444); err != nil {
		tmp.Close()
		return fmt.Errorf("init-data image %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("init-data image %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("init-data image: %w", err)
	}
	return nil
}

// ReadBlockImage returns the raw TOML carried by a block image. A device
// without the magic yields an error wrapping errdefs.ErrNotFound, so a
// scanner can move on to the next device; anything else malformed is
// errdefs.ErrInvalidArgument. The result is not parsed: call Parse.
func ReadBlockImage(r io.ReaderAt) ([]byte, error) {
	hdr := make([]byte, blockHeader)
	if _, err := r.ReadAt(hdr, 0); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("device shorter than the init-data header: %w", errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("read init-data header: %w", err)
	}
	if string(hdr[:len(blockMagic)]) != blockMagic {
		return nil, fmt.Errorf("no init-data magic: %w", errdefs.ErrNotFound)
	}
	n := binary.LittleEndian.Uint64(hdr[len(blockMagic):])
	if n == 0 || n > maxCompressed {
		return nil, invalid("block image: gzip length %d is out of range 1..%d", n, maxCompressed)
	}
	gz := make([]byte, n)
	if _, err := r.ReadAt(gz, int64(blockHeader)); err != nil {
		return nil, invalid("block image: gzip length %d runs past the device (%v)", n, err)
	}
	raw, err := gunzip(gz)
	if err != nil {
		return nil, fmt.Errorf("block image: %w", err)
	}
	return raw, nil
}

// GuestDevicePatterns returns the block devices the guest scans for the image.
func GuestDevicePatterns() []string { return []string{"/dev/vd*", "/dev/sd*"} }

// Scan looks for an init-data image on the given block devices (glob
// patterns; GuestDevicePatterns() in the guest) and returns the raw TOML and
// the device it came from. No image at all is errdefs.ErrNotFound (the pod
// has no init-data); a device that has the magic but is malformed is an
// error, never skipped, because the host may be tampering.
func Scan(patterns []string) (raw []byte, device string, err error) {
	var devices []string
	for _, p := range patterns {
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, "", fmt.Errorf("init-data scan pattern %q: %w", p, errdefs.ErrInvalidArgument)
		}
		devices = append(devices, m...)
	}
	sort.Strings(devices)
	for _, dev := range devices {
		raw, err := readDevice(dev)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, dev, fmt.Errorf("init-data on %s: %w", dev, err)
		}
		return raw, dev, nil
	}
	return nil, "", fmt.Errorf("no init-data image on %v: %w", patterns, errdefs.ErrNotFound)
}

func readDevice(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		// Partitions and busy devices we cannot open are not the image.
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrNotFound)
	}
	defer f.Close()
	return ReadBlockImage(f)
}
