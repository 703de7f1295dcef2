//go:build linux

// Package tools makes the guest tools disk's binaries reachable: a read-only
// EROFS image with what containers and policies need only later (crun,
// coco-policy), which non-TEE runtime classes attach instead of carrying it
// in the initrd. The kernel unpacks the whole initrd at every boot (under
// TCG ~11 ms per MB); a disk is read only as far as a binary is run.
//
// A TEE guest never mounts the disk: the host can change it, and a TEE
// guest runs only what its measured initrd carries.
package tools

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/agent/boot"
)

// Dir is where the disk is mounted; the agent's PATH ends with it.
const Dir = "/run/coco/tools"

// Disk is the tools disk's state. Wait is safe for concurrent use; Mount or
// Skip is called once.
type Disk struct {
	ready chan struct{}
	once  sync.Once
	note  string // why no binary came from the disk, for errors ("" = mounted)
}

// New returns a Disk that is not ready yet.
func New() *Disk { return &Disk{ready: make(chan struct{})} }

// Mount looks up the block device whose serial is serial under sysBlock
// (/sys/block) and mounts it read-only at dir; no such disk is not an error
// (the initrd then carries everything). Either way the Disk is ready after.
func (d *Disk) Mount(sysBlock, devDir, serial, dir string) (mounted bool, err error) {
	defer d.done()
	dev := boot.DiskBySerial(sysBlock, devDir, serial)
	if dev == "" {
		d.note = "this VM has no tools disk (serial " + serial + ")"
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		d.note = err.Error()
		return false, err
	}
	if err := unix.Mount(dev, dir, "erofs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		d.note = fmt.Sprintf("mount %s (serial %s): %v", dev, serial, err)
		return false, fmt.Errorf("tools disk: %s", d.note)
	}
	return true, nil
}

// Skip makes the Disk ready without mounting anything, for reason.
func (d *Disk) Skip(reason string) {
	d.note = reason
	d.done()
}

func (d *Disk) done() { d.once.Do(func() { close(d.ready) }) }

// Wait returns once name is found in PATH: at once if the initrd carries
// it, else after the disk is mounted. A binary found in neither is
// errdefs.ErrFailedPrecondition with what to change.
func (d *Disk) Wait(ctx context.Context, name string) error {
	if _, err := exec.LookPath(name); err == nil {
		return nil
	}
	select {
	case <-d.ready:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the tools disk to run %s: %w", name, ctx.Err())
	}
	if _, err := exec.LookPath(name); err == nil {
		return nil
	}
	why := d.note
	if why == "" {
		why = "the tools disk lacks it"
	}
	return fmt.Errorf("%s is neither in the initrd nor on a tools disk (%s): boot the full initrd.img, "+
		"or attach tools.erofs with hypervisor.tools_image (runtime classes without a TEE): %w",
		name, why, errdefs.ErrFailedPrecondition)
}
