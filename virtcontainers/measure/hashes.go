package measure

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
)

// SEV hashes table: the structure QEMU writes into the firmware page named
// by the SEV hash table GUID when it boots a kernel directly with
// kernel-hashes=on, so that OVMF can verify what it loads. Layout (packed,
// little-endian), followed by zero padding to a 16-byte boundary:
//
//	GUID table_header, u16 length(table)
//	{GUID cmdline, u16 length(entry), sha256[32]}
//	{GUID initrd,  u16 length(entry), sha256[32]}
//	{GUID kernel,  u16 length(entry), sha256[32]}
const (
	guidHashTableHeader = "9438d606-4f22-4cc9-b479-a793d411fd21"
	guidHashKernel      = "4de79437-abd2-427f-b835-d5b172d2045b"
	guidHashInitrd      = "44baf731-3a2f-4bd7-9af1-41e29169781d"
	guidHashCmdline     = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a"

	hashEntryLen   = 16 + 2 + sha256.Size
	hashTableLen   = 16 + 2 + 3*hashEntryLen
	paddedTableLen = (hashTableLen + 15) &^ 15
)

// KernelHashes are the SHA-256 digests of a directly booted kernel, its
// initrd and its command line, as QEMU measures them.
type KernelHashes struct {
	Kernel, Initrd, Cmdline [sha256.Size]byte
}

// NewKernelHashes hashes in-memory inputs. The command line is hashed with
// its terminating NUL, as QEMU passes it; an empty initrd is hashed as the
// empty string (QEMU does the same when none is given).
func NewKernelHashes(kernel, initrd []byte, cmdline string) *KernelHashes {
	return &KernelHashes{
		Kernel:  sha256.Sum256(kernel),
		Initrd:  sha256.Sum256(initrd),
		Cmdline: sha256.Sum256(append([]byte(cmdline), 0)),
	}
}

// HashKernelFiles hashes a kernel and an optional initrd ("" = none) from
// disk without holding them in memory.
func HashKernelFiles(kernel, initrd, cmdline string) (*KernelHashes, error) {
	if kernel == "" {
		return nil, fmt.Errorf("kernel path is empty: %w", errdefs.ErrInvalidArgument)
	}
	h := NewKernelHashes(nil, nil, cmdline)
	var err error
	if h.Kernel, err = hashFile(kernel); err != nil {
		return nil, err
	}
	if initrd != "" {
		if h.Initrd, err = hashFile(initrd); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func hashFile(path string) (sum [sha256.Size]byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, fmt.Errorf("hash %s: %w", path, err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// Table is the padded SEV hashes table as QEMU lays it out.
func (k *KernelHashes) Table() []byte {
	t := make([]byte, 0, paddedTableLen)
	hdr := guidBytes(guidHashTableHeader)
	t = append(t, hdr[:]...)
	t = binary.LittleEndian.AppendUint16(t, hashTableLen)
	for _, e := range []struct {
		guid string
		sum  [sha256.Size]byte
	}{{guidHashCmdline, k.Cmdline}, {guidHashInitrd, k.Initrd}, {guidHashKernel, k.Kernel}} {
		g := guidBytes(e.guid)
		t = append(t, g[:]...)
		t = binary.LittleEndian.AppendUint16(t, hashEntryLen)
		t = append(t, e.sum[:]...)
	}
	return append(t, make([]byte, paddedTableLen-hashTableLen)...)
}
