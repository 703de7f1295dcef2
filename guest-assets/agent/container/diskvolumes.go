package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/agent/spec"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// mountDiskVolumes mounts each hot-plugged volume disk (an image volume's
// EROFS image) read-only, nodev and nosuid under the bundle, and returns
// the guest directory for each destination (spec.Options.DiskDirs). The
// kernel's read-only mount is what keeps the volume read-only, whatever
// the host's mount options say. Mounts join p.mounts, so a failed Prepare
// and Remove unmount them. vols were validated (api.validateDiskVolumes).
func (m *Manager) mountDiskVolumes(ctx context.Context, p *prepared, vols []*api.DiskVolume) (map[string]string, error) {
	if len(vols) == 0 {
		return nil, nil
	}
	if m.cfg.DriversReady != nil {
		select {
		case <-m.cfg.DriversReady:
		case <-ctx.Done():
			return nil, fmt.Errorf("disk_volumes: disk and filesystem drivers still loading: %w", ctx.Err())
		}
	}
	dirs := make(map[string]string, len(vols))
	for i, v := range vols {
		field := fmt.Sprintf("disk_volumes[%d]", i)
		// Checked again here: the serial picks a device node of the guest.
		if !api.IsDiskVolumeSerial(v.GetSerial()) || v.GetFstype() != "erofs" {
			return nil, fmt.Errorf("%s: serial %q, fstype %q: want a volume disk serial and erofs: %w", field, v.GetSerial(), v.GetFstype(), errdefs.ErrInvalidArgument)
		}
		dev, err := m.FindDisk(ctx, v.GetSerial())
		if err != nil {
			return nil, fmt.Errorf("%s.serial: no disk with serial %q appeared within %s for the mount at %s (was it hot-plugged?): %w",
				field, v.GetSerial(), m.cfg.DeviceWait, v.GetDestination(), errdefs.ErrNotFound)
		}
		dir := filepath.Join(p.bundle, ".disks", fmt.Sprint(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := m.mountRetry(ctx, dev, dir, "erofs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID); err != nil {
			return nil, fmt.Errorf("%s: mount erofs disk %s (serial %s) for %s: %w", field, dev, v.GetSerial(), v.GetDestination(), err)
		}
		p.mounts = append([]string{dir}, p.mounts...)
		dirs[v.GetDestination()] = dir
	}
	return dirs, nil
}

// blockVolumes finds each hot-plugged block volume's disk by serial and
// returns its device numbers by linux.devices path (spec.Options.BlockDevs).
// The container gets the device node; nothing is mounted.
func (m *Manager) blockVolumes(ctx context.Context, vols []*api.BlockVolume) (map[string]spec.GuestDevice, error) {
	if len(vols) == 0 {
		return nil, nil
	}
	if m.cfg.DriversReady != nil {
		select {
		case <-m.cfg.DriversReady:
		case <-ctx.Done():
			return nil, fmt.Errorf("block_volumes: disk drivers still loading: %w", ctx.Err())
		}
	}
	out := make(map[string]spec.GuestDevice, len(vols))
	for i, v := range vols {
		field := fmt.Sprintf("block_volumes[%d]", i)
		if !api.IsBlockVolumeSerial(v.GetSerial()) {
			return nil, fmt.Errorf("%s.serial: %q is not a block volume serial: %w", field, v.GetSerial(), errdefs.ErrInvalidArgument)
		}
		dev, err := m.FindDisk(ctx, v.GetSerial())
		if err != nil {
			return nil, fmt.Errorf("%s.serial: no disk with serial %q appeared within %s for the device %s (was it hot-plugged?): %w",
				field, v.GetSerial(), m.cfg.DeviceWait, v.GetPath(), errdefs.ErrNotFound)
		}
		var st unix.Stat_t
		if err := unix.Stat(dev, &st); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", field, dev, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFBLK {
			return nil, fmt.Errorf("%s: %s is not a block device: %w", field, dev, errdefs.ErrInvalidArgument)
		}
		out[v.GetPath()] = spec.GuestDevice{Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)), ReadOnly: v.GetReadOnly()}
	}
	return out, nil
}
