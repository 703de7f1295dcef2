package sandbox

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// sysDevBlock indexes the host's block devices by number.
var sysDevBlock = "/sys/dev/block"

// blockSerial is the virtio-blk serial of a container's i-th block volume:
// "b" and 19 hex digits of a digest (api.IsBlockVolumeSerial).
func blockSerial(containerID string, i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/block/%d", containerID, i))
	return "b" + hex.EncodeToString(sum[:])[:19]
}

// attachBlockVolumes hot-plugs the host block device of each block entry
// of the spec's linux.devices (what containerd's CRI writes for a pod's
// volumeDevices: the container path and the host device's numbers) as a
// disk of the VM, read-only unless a device cgroup rule lets the
// container write it. The guest makes it the device node at that path.
// Disks are recorded with the image volumes', so detachDiskVolumes
// removes both; on error the caller's detach removes those attached.
//
// A privileged container's linux.devices are every device of the host
// (containerd's CRI adds them with an allow-all rule unless the runtime
// class sets privileged_without_host_devices): none is attached, the
// container gets the guest's own devices (the guest drops the entries).
func (s *vmSandbox) attachBlockVolumes(ctx context.Context, containerID string, sp *specs.Spec) ([]*api.BlockVolume, error) {
	if sp.Linux == nil || allDevicesAllowed(sp.Linux.Resources) {
		return nil, nil
	}
	var out []*api.BlockVolume
	for i, d := range sp.Linux.Devices {
		if d.Type != "b" {
			continue
		}
		field := fmt.Sprintf("container %s: linux.devices[%d] (%s)", containerID, i, d.Path)
		if len(out) == api.MaxDiskVolumes {
			return nil, fmt.Errorf("%s: more than %d block volumes; each is a disk of the pod's VM: %w", field, api.MaxDiskVolumes, errdefs.ErrInvalidArgument)
		}
		host, err := hostBlockDevice(d.Major, d.Minor)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		hot, ok := s.vm.(hypervisor.DiskHotplugger)
		if !ok {
			return nil, fmt.Errorf("%s: hypervisor %q cannot attach disks to a running VM: %w", field, s.vmConfig.Driver, errdefs.ErrNotImplemented)
		}
		serial := blockSerial(containerID, len(out))
		ro := !deviceWritable(sp.Linux.Resources, d)
		if err := hot.AddDisk(ctx, hypervisor.Disk{ID: serial, Path: host, ReadOnly: ro, Shared: true}); err != nil {
			return nil, fmt.Errorf("%s: attach host block device %s: %w", field, host, err)
		}
		s.dvols.add(containerID, attachedDisk{serial: serial})
		out = append(out, &api.BlockVolume{Serial: serial, Path: filepath.Clean(d.Path), ReadOnly: ro})
	}
	return out, nil
}

// hostBlockDevice finds the host's device node of block device
// major:minor (its DEVNAME in sysfs) and checks that it is that device.
func hostBlockDevice(major, minor int64) (string, error) {
	uevent := filepath.Join(sysDevBlock, fmt.Sprintf("%d:%d", major, minor), "uevent")
	f, err := os.Open(uevent)
	if err != nil {
		return "", fmt.Errorf("no host block device %d:%d (%v): point volumeDevices at a block device of this node: %w", major, minor, err, errdefs.ErrNotFound)
	}
	defer f.Close()
	name := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "DEVNAME="); ok {
			name = v
		}
	}
	if name == "" || strings.Contains(name, "..") {
		return "", fmt.Errorf("host block device %d:%d: %s names no device node: %w", major, minor, uevent, errdefs.ErrNotFound)
	}
	node := filepath.Join("/dev", name)
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil {
		return "", fmt.Errorf("host block device %d:%d: %w", major, minor, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || int64(unix.Major(st.Rdev)) != major || int64(unix.Minor(st.Rdev)) != minor {
		return "", fmt.Errorf("host block device %d:%d: %s is not that device: %w", major, minor, node, errdefs.ErrNotFound)
	}
	return node, nil
}

// deviceWritable says whether a device cgroup rule lets the container
// write block device d (containerd writes one per device, with the CRI
// device's permissions).
func deviceWritable(r *specs.LinuxResources, d specs.LinuxDevice) bool {
	if r == nil {
		return false
	}
	for _, rule := range r.Devices {
		if !rule.Allow || (rule.Type != "b" && rule.Type != "a") || !strings.Contains(rule.Access, "w") {
			continue
		}
		if (rule.Major == nil || *rule.Major == d.Major) && (rule.Minor == nil || *rule.Minor == d.Minor) {
			return true
		}
	}
	return false
}

// allDevicesAllowed says whether a device cgroup rule allows every device
// (a privileged container's).
func allDevicesAllowed(r *specs.LinuxResources) bool {
	if r == nil {
		return false
	}
	for _, rule := range r.Devices {
		if rule.Allow && (rule.Type == "a" || rule.Type == "") && rule.Major == nil && rule.Minor == nil {
			return true
		}
	}
	return false
}
