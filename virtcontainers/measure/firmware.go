package measure

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// AmdSevFirmware is the file name Debian's ovmf-amdsev package installs
// (/usr/share/ovmf/OVMF.amdsev.fd) and the runtime classes expect in
// share_dir: the OvmfPkg/AmdSev build of OVMF.
const AmdSevFirmware = tee.AmdSevFirmware

// footerReadLen is how much of a firmware file CheckFirmwareFile reads: the
// footer table and the SEV metadata sit in the reset-vector area, the last
// few KiB of an OVMF image.
const footerReadLen = 64 << 10

// NoKernelHashesError is a firmware image that cannot verify the SEV hashes
// table, so a kernel, initrd and command line booted through it are not
// covered by the launch measurement. It unwraps to
// errdefs.ErrFailedPrecondition.
type NoKernelHashesError struct {
	Reason string // what the image lacks
}

func (e *NoKernelHashesError) Error() string {
	return "the firmware cannot verify kernel hashes: " + e.Reason
}

// Unwrap makes errdefs.IsFailedPrecondition true.
func (e *NoKernelHashesError) Unwrap() error { return errdefs.ErrFailedPrecondition }

// CheckKernelHashes reports whether the image is a build of OVMF that
// checks the kernel, initrd and command line against the SEV hashes table
// QEMU writes with kernel-hashes=on (OvmfPkg/AmdSev). Only that build gives
// the table a page (PcdQemuHashTableBase; the generic build leaves it 0, and
// QEMU then refuses kernel-hashes=on), and only it links the verifier
// (BlobVerifierLibSevHashes) that stops the boot on a mismatch. For SNP the
// page must also be an SEV metadata section, or it is not part of the launch
// digest. The error is a *NoKernelHashesError.
func (o *OVMF) CheckKernelHashes(mode Mode) error {
	if _, ok := o.HashesTableGPA(); !ok {
		return &NoKernelHashesError{Reason: "its OVMF footer table gives no SEV hashes table page (GUID " + guidSEVHashTableRV + "), which only the AmdSev build of OVMF has"}
	}
	if mode == ModeSNP && !o.hasSection(SectionKernelHashes) {
		return &NoKernelHashesError{Reason: "its SEV metadata has no SNP_KERNEL_HASHES section, so SNP would not measure the hashes page"}
	}
	return nil
}

// CheckFirmwareFile reads the end of the firmware file at path and runs
// CheckKernelHashes on it. It does not block on a FIFO or device that is
// put in the firmware's place: anything but a regular file is an error. A
// missing file is an error matching fs.ErrNotExist.
func CheckFirmwareFile(path string, mode Mode) error {
	tail, err := readTail(path, footerReadLen)
	if err != nil {
		return err
	}
	o, err := ParseOVMF(tail)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return o.CheckKernelHashes(mode)
}

// readTail returns the last n bytes of a regular file (all of it when
// shorter), rounded down to whole 4 KiB pages as ParseOVMF expects of an
// image that ends at 4 GiB.
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s): %w", path, st.Mode().Type(), errdefs.ErrInvalidArgument)
	}
	size := st.Size()
	if size%pageSize != 0 || size == 0 {
		return nil, fmt.Errorf("%s is %d bytes, not a whole number of 4 KiB pages as a firmware image is: %w", path, size, errdefs.ErrInvalidArgument)
	}
	n = min(n, size)
	buf := make([]byte, n)
	// ReadAt may report io.EOF along with a full read that ends the file.
	if got, err := f.ReadAt(buf, size-n); int64(got) != n || (err != nil && !errors.Is(err, io.EOF)) {
		return nil, fmt.Errorf("read %s: %d of %d bytes: %v", path, got, n, err)
	}
	return buf, nil
}
