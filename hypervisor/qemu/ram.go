package qemu

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ramDir is where OpenRAM mounts its tmpfs, inside the VM's state dir, for
// the microseconds it takes to create one file there.
func ramDir(stateDir string) string { return filepath.Join(stateDir, "ram") }

// OpenRAM returns the file QEMU maps as guest memory (plan.ramFile) of mib
// MiB, using stateDir/ram for a moment. make bench boots its floor with it.
//
// Under TCG every first touch of a guest page is a host page fault, and on
// a virtualised host each fault is expensive: loading the 33 MB kernel alone
// took QEMU ~135 ms before the guest ran. A tmpfs mounted with huge=always
// gives the file 2 MiB pages, 512 times fewer faults. The host's memfd (the
// alternative) follows shmem_enabled, "never" by default, which a runtime
// has no business changing for the whole host.
//
// The mount lives only until the file exists: an O_TMPFILE file has no name,
// and a lazily detached tmpfs lives on while the file is open, so nothing is
// left to clean up when QEMU exits, however it exits.
//
// When the mount is refused (no CAP_SYS_ADMIN), the file is a plain memfd
// and hugeErr says why; QEMU's command line is the same either way.
func OpenRAM(stateDir string, mib uint32) (f *os.File, hugeErr error) {
	f, hugeErr = openHugeRAM(ramDir(stateDir), mib)
	if hugeErr == nil {
		return f, nil
	}
	fd, err := unix.MemfdCreate("coco-guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("guest memory: memfd: %w (after %v)", err, hugeErr)
	}
	return os.NewFile(uintptr(fd), "coco-guest-ram"), hugeErr
}

func openHugeRAM(dir string, mib uint32) (*os.File, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("guest memory: %w", err)
	}
	defer os.Remove(dir)
	opts := fmt.Sprintf("huge=always,size=%dm,mode=0700", mib)
	if err := unix.Mount("coco-guest-ram", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return nil, fmt.Errorf("guest memory: mount a huge-page tmpfs on %s: %w", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if uerr := unix.Unmount(dir, unix.MNT_DETACH); uerr != nil && err == nil {
		unix.Close(fd)
		return nil, fmt.Errorf("guest memory: detach %s: %w", dir, uerr)
	}
	if err != nil {
		return nil, fmt.Errorf("guest memory: create its file: %w", err)
	}
	return os.NewFile(uintptr(fd), "coco-guest-ram"), nil
}
