package qemu

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
)

// monitorFor returns the QMP monitor of a running VM.
func (v *VM) monitorFor(what string) (*monitor, error) {
	mon := v.mon.Load()
	if mon == nil || !v.running() || v.stopped {
		return nil, fmt.Errorf("%w: %s: VM %s is not running", errdefs.ErrFailedPrecondition, what, v.plan.cfg.ID)
	}
	return mon, nil
}

// blockdevArgs is blockdev-add's argument for a raw image file, or a host
// block device (QEMU's file driver refuses those: host_device).
func blockdevArgs(d hypervisor.Disk) map[string]any {
	driver := "file"
	if fi, err := os.Stat(d.Path); err == nil && fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0 {
		driver = "host_device"
	}
	return map[string]any{
		"driver":    "raw",
		"node-name": nodeName(d.ID),
		"read-only": d.ReadOnly,
		"file":      map[string]any{"driver": driver, "filename": d.Path, "read-only": d.ReadOnly},
	}
}

// qmpHotplugTimeout bounds one hot-plug's QMP exchanges, whatever the
// caller's deadline.
const qmpHotplugTimeout = 10 * time.Second

// AddDisk attaches a raw image while the guest runs: blockdev-add, then a
// virtio-blk device (serial = ID) in a free hot-plug slot. The guest finds
// it by serial. An ID already in use is errdefs.ErrAlreadyExists.
func (v *VM) AddDisk(ctx context.Context, d hypervisor.Disk) error {
	if !diskIDPattern.MatchString(d.ID) {
		return fmt.Errorf("%w: disk id %q: want 1-20 characters of [A-Za-z0-9_-] (it becomes the virtio-blk serial)", errdefs.ErrInvalidArgument, d.ID)
	}
	if d.Format != "" && d.Format != "raw" {
		return fmt.Errorf("%w: disk %q: format %q: only \"raw\" is supported", errdefs.ErrInvalidArgument, d.ID, d.Format)
	}
	if !filepath.IsAbs(d.Path) {
		return fmt.Errorf("%w: disk %q: path %q: want an absolute path", errdefs.ErrInvalidArgument, d.ID, d.Path)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	_, hot := v.disks[d.ID]
	cold := slices.ContainsFunc(v.plan.cfg.Disks, func(c hypervisor.Disk) bool { return c.ID == d.ID })
	if hot || cold {
		return fmt.Errorf("%w: disk %q is already attached", errdefs.ErrAlreadyExists, d.ID)
	}
	port, err := v.freeSlot(d.ID)
	if err != nil {
		return err
	}
	mon, err := v.monitorFor("add disk " + d.ID)
	if err != nil {
		return err
	}
	// The caller's deadline (a CRI CreateContainer's) must not cut a QMP
	// exchange short: an abandoned exchange closes the monitor for the rest
	// of the VM's life, and every later hot-plug of the pod would fail with
	// "QMP monitor closed" (issue 27). QEMU that does not answer within
	// qmpHotplugTimeout is hung, and then closing the monitor is right.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), qmpHotplugTimeout)
	defer cancel()

	if err := mon.run(ctx, "blockdev-add", blockdevArgs(d), nil); err != nil {
		return fmt.Errorf("disk %q (%s): %w", d.ID, d.Path, err)
	}
	dev := map[string]any{
		"driver": v.plan.virtio("virtio-blk"),
		"id":     diskDevID(d.ID),
		"drive":  nodeName(d.ID),
		"serial": d.ID,
	}
	if port >= 0 {
		bus, addr := v.plan.hotplugPlace(port)
		dev["bus"] = bus
		if addr != "" {
			dev["addr"] = addr
		}
	}
	if v.plan.confidential() {
		dev["iommu_platform"] = true
	}
	if d.Shared {
		dev["share-rw"] = true
	}
	if err := mon.run(ctx, "device_add", dev, nil); err != nil {
		// Leave nothing half-attached.
		_ = mon.run(context.WithoutCancel(ctx), "blockdev-del", map[string]any{"node-name": nodeName(d.ID)}, nil)
		return fmt.Errorf("disk %q: %w", d.ID, err)
	}
	v.disks[d.ID] = port
	return nil
}

// freeSlot is the first hot-plug slot no disk uses; -1 on machines that
// plug disks straight onto their bus. Callers hold mu.
func (v *VM) freeSlot(id string) (int, error) {
	n := v.plan.hotplugSlots()
	if n == 0 {
		return -1, nil
	}
	for i := range n {
		if !v.portInUse(i) {
			return i, nil
		}
	}
	return -1, fmt.Errorf("%w: disk %q: all %d hot-plug slots are in use (one per container root filesystem): remove a container first", errdefs.ErrResourceExhausted, id, n)
}

func (v *VM) portInUse(i int) bool {
	for _, p := range v.disks {
		if p == i {
			return true
		}
	}
	return false
}

// RemoveDisk detaches a disk added with AddDisk: device_del, wait for the
// guest to release it (DEVICE_DELETED), then blockdev-del. Unknown IDs are
// errdefs.ErrNotFound; disks attached at boot cannot be removed.
func (v *VM) RemoveDisk(ctx context.Context, id string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.disks[id]; !ok {
		if slices.ContainsFunc(v.plan.cfg.Disks, func(c hypervisor.Disk) bool { return c.ID == id }) {
			return fmt.Errorf("%w: disk %q was attached at boot and cannot be removed", errdefs.ErrFailedPrecondition, id)
		}
		return fmt.Errorf("%w: disk %q", errdefs.ErrNotFound, id)
	}
	mon, err := v.monitorFor("remove disk " + id)
	if err != nil {
		return err
	}
	devID := diskDevID(id)
	gone := mon.awaitDeleted(devID)
	if err := mon.run(ctx, "device_del", map[string]any{"id": devID}, nil); err != nil {
		mon.forgetDeleted(devID)
		return fmt.Errorf("disk %q: %w", id, err)
	}
	// PCIe hot-unplug needs the guest's cooperation (it takes ~5 s by the
	// spec's attention-button delay); the backing file stays open until then.
	select {
	case <-gone:
	case <-v.exited:
		// QEMU is gone, and the device with it.
		mon.forgetDeleted(devID)
		delete(v.disks, id)
		return nil
	case <-ctx.Done():
		mon.forgetDeleted(devID)
		return fmt.Errorf("disk %q: guest did not release the device: %w", id, ctx.Err())
	}
	if err := mon.run(ctx, "blockdev-del", map[string]any{"node-name": nodeName(id)}, nil); err != nil {
		return fmt.Errorf("disk %q: %w", id, err)
	}
	delete(v.disks, id)
	return nil
}
