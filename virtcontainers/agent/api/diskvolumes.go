package api

import (
	"fmt"
	"regexp"
)

// MaxDiskVolumes bounds the disks one container may have hot-plugged for
// its bind mounts (each is a PCI slot of the VM).
const MaxDiskVolumes = 16

// diskVolumeSerial is the serial form the host gives volume disks: "v"
// and 19 hex digits (rootfs disks are "r..."), so a volume can never
// name a rootfs, the tools, init-data or scratch disk.
var diskVolumeSerial = regexp.MustCompile(`^v[0-9a-f]{19}$`)

// IsDiskVolumeSerial says whether s has the form of a volume disk's serial.
func IsDiskVolumeSerial(s string) bool { return diskVolumeSerial.MatchString(s) }

// blockVolumeSerial is the serial form of a hot-plugged host block device
// (a volumeDevices entry): "b" and 19 hex digits.
var blockVolumeSerial = regexp.MustCompile(`^b[0-9a-f]{19}$`)

// IsBlockVolumeSerial says whether s has the form of a block volume's serial.
func IsBlockVolumeSerial(s string) bool { return blockVolumeSerial.MatchString(s) }

// validateBlockVolumes checks PrepareContainer's block_volumes: at most
// MaxDiskVolumes with the disk volumes, serials of the block form given
// once, clean absolute paths other than "/" given once. That each path is
// a linux.devices entry of the spec is checked where the spec is rewritten.
func validateBlockVolumes(vols []*BlockVolume, disks int) error {
	if len(vols)+disks > MaxDiskVolumes {
		return invalid("block_volumes", "%d disks with the %d disk volumes, at most %d", len(vols), disks, MaxDiskVolumes)
	}
	serials := map[string]bool{}
	paths := map[string]bool{}
	for i, v := range vols {
		field := fmt.Sprintf("block_volumes[%d]", i)
		if !IsBlockVolumeSerial(v.GetSerial()) {
			return invalid(field+".serial", "%q is not a block volume serial: want \"b\" and 19 lowercase hex digits", v.GetSerial())
		}
		if serials[v.GetSerial()] {
			return invalid(field+".serial", "%q given twice", v.GetSerial())
		}
		serials[v.GetSerial()] = true
		if err := ValidateAbsPath(field+".path", v.GetPath()); err != nil {
			return err
		}
		if v.GetPath() == "/" || paths[v.GetPath()] {
			return invalid(field+".path", "%q: want a device node path given once", v.GetPath())
		}
		paths[v.GetPath()] = true
	}
	return nil
}

// validateDiskVolumes checks PrepareContainer's disk_volumes: bounded,
// serials of the volume form given once, clean absolute destinations
// other than "/" given once, EROFS only. That each destination is a bind
// mount of the spec is checked where the spec is rewritten.
func validateDiskVolumes(vols []*DiskVolume) error {
	if len(vols) > MaxDiskVolumes {
		return invalid("disk_volumes", "%d disks, at most %d", len(vols), MaxDiskVolumes)
	}
	serials := map[string]bool{}
	dests := map[string]bool{}
	for i, v := range vols {
		field := fmt.Sprintf("disk_volumes[%d]", i)
		if !IsDiskVolumeSerial(v.GetSerial()) {
			return invalid(field+".serial", "%q is not a volume disk serial: want \"v\" and 19 lowercase hex digits", v.GetSerial())
		}
		if serials[v.GetSerial()] {
			return invalid(field+".serial", "%q given twice", v.GetSerial())
		}
		serials[v.GetSerial()] = true
		if err := ValidateAbsPath(field+".destination", v.GetDestination()); err != nil {
			return err
		}
		if v.GetDestination() == "/" {
			return invalid(field+".destination", "a volume cannot replace the root filesystem")
		}
		if dests[v.GetDestination()] {
			return invalid(field+".destination", "%q given twice", v.GetDestination())
		}
		dests[v.GetDestination()] = true
		if t := v.GetFstype(); t != "erofs" {
			return invalid(field+".fstype", "%q is not supported: want erofs", t)
		}
	}
	return nil
}
