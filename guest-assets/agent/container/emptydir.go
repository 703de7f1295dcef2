package container

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/agent/mkfs"
	"github.com/coco-runtime/coco/guest-assets/agent/scratch"
	"github.com/coco-runtime/coco/guest-assets/agent/spec"
)

// mountEmptyDir makes dir, a pod's emptyDir, its own tmpfs the first time
// a container mounts it, so one emptyDir filling up gives its writers
// ENOSPC instead of taking the space of the others and of the agent.
// size (bytes) comes from the pod's emptydir.coco-runtime.io/<name>
// annotation; 0 leaves the kernel's default (half the guest's memory).
// Later containers of the pod share the mount; its first size stays.
func (m *Manager) mountEmptyDir(dir string, size int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.emptyDirs[dir] {
		return nil
	}
	opts := "mode=0777"
	if size > 0 {
		opts += fmt.Sprintf(",size=%d", size)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NODEV|unix.MS_NOSUID, opts); err != nil {
		return fmt.Errorf("emptyDir tmpfs on %s (%s): %w", dir, opts, err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	if m.emptyDirs == nil {
		m.emptyDirs = map[string]bool{}
	}
	m.emptyDirs[dir] = true
	return nil
}

// mountEmptyDirDisk makes dir, a disk-backed emptyDir, a file system on
// the disk the host hot-plugged for it (serial from the emptyDir's path)
// the first time a container mounts it: the disk is mapped through
// dm-crypt under a fresh key that never leaves the guest, so the host
// holds ciphertext only and the content dies with the VM, and a new file
// system of the whole disk (mkfs) goes on the mapping (whatever the host put
// on the disk is noise through the key). The disk's size is the limit:
// writing past it is ENOSPC, and the data does not use the guest's memory.
func (m *Manager) mountEmptyDirDisk(ctx context.Context, dir, serial string, want int64) error {
	m.emptyDirMu.Lock()
	defer m.emptyDirMu.Unlock()
	m.mu.Lock()
	done := m.emptyDirs[dir]
	m.mu.Unlock()
	if done {
		return nil
	}
	if m.cfg.DriversReady != nil {
		select {
		case <-m.cfg.DriversReady:
		case <-ctx.Done():
			return fmt.Errorf("disk-backed emptyDir: disk drivers still loading: %w", ctx.Err())
		}
	}
	start := time.Now()
	dev, err := m.FindDisk(ctx, serial)
	if err != nil {
		return fmt.Errorf("disk-backed emptyDir (disk serial %s, which the host hot-plugs for an emptydir.coco-runtime.io annotation ending in %q): %w", serial, spec.EmptyDirDiskSuffix, err)
	}
	node, size, err := scratch.Encrypt("coco-"+serial, dev)
	if err != nil {
		return fmt.Errorf("disk-backed emptyDir: %w", err)
	}
	if err := checkDiskSize(serial, size, want); err != nil {
		return err
	}
	f, err := os.OpenFile(node, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = mkfs.Format(f, size)
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("disk-backed emptyDir on %s: %w", dev, err)
	}
	// noinit_itable: the unused inode tables stay unwritten (mkfs).
	if err := unix.Mount(node, dir, "ext4", unix.MS_NODEV|unix.MS_NOSUID, "noinit_itable"); err != nil {
		return fmt.Errorf("disk-backed emptyDir: mount %s on %s: %w", node, dir, err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	log.G(ctx).WithField("serial", serial).Infof("disk-backed emptyDir: %d bytes, encrypted and formatted in %s", size, time.Since(start).Round(time.Millisecond))
	m.mu.Lock()
	if m.emptyDirs == nil {
		m.emptyDirs = map[string]bool{}
	}
	m.emptyDirs[dir] = true
	m.mu.Unlock()
	return nil
}

// checkDiskSize holds the host to the owner's size: a larger disk would
// lift the limit the annotation sets, a smaller one lower it.
func checkDiskSize(serial string, got, want int64) error {
	if got != want&^511 {
		return fmt.Errorf("disk-backed emptyDir: the host's disk %s has %d bytes, the annotation asks for %d: %w", serial, got, want, errdefs.ErrInvalidArgument)
	}
	return nil
}
