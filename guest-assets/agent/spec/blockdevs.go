package spec

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// GuestDevice is the guest disk standing in for a host block device.
type GuestDevice struct {
	Major, Minor int64
	// ReadOnly: the disk was hot-plugged read-only; the container's
	// device cgroup rule for it loses "w" whatever the host asked.
	ReadOnly bool
}

// blockDevices takes the linux.devices entries that devs name out of the
// spec and returns them with the guest disk's numbers, and gives the
// device cgroup rules allowing the host device's numbers the guest's
// instead. The other entries stay for rewriteLinux (dropped: their host
// devices do not exist in the guest). A path of devs that no block device
// entry has is refused: the host hot-plugged a disk for nothing.
func blockDevices(s *specs.Spec, devs map[string]GuestDevice) ([]specs.LinuxDevice, error) {
	if len(devs) == 0 {
		return nil, nil
	}
	paths := make([]string, 0, len(devs))
	for p := range devs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var out []specs.LinuxDevice
	for _, p := range paths {
		g := devs[p]
		i := slices.IndexFunc(s.Linux.Devices, func(d specs.LinuxDevice) bool { return path.Clean(d.Path) == p })
		if i < 0 {
			return nil, fmt.Errorf("block_volumes: path %q has no linux.devices entry in the spec: %w", p, errdefs.ErrInvalidArgument)
		}
		d := s.Linux.Devices[i]
		if d.Type != "b" {
			return nil, invalid(fmt.Sprintf("linux.devices[%d].type", i), "%q for block volume %s: want b", d.Type, p)
		}
		s.Linux.Devices = slices.Delete(s.Linux.Devices, i, i+1)
		if s.Linux.Resources != nil {
			for j := range s.Linux.Resources.Devices {
				r := &s.Linux.Resources.Devices[j]
				if r.Type != "b" || r.Major == nil || r.Minor == nil || *r.Major != d.Major || *r.Minor != d.Minor {
					continue
				}
				r.Major, r.Minor = ptr(g.Major), ptr(g.Minor)
				if g.ReadOnly && r.Allow {
					r.Access = strings.ReplaceAll(r.Access, "w", "")
				}
			}
		}
		d.Path, d.Major, d.Minor = p, g.Major, g.Minor
		out = append(out, d)
	}
	return out, nil
}

func ptr(v int64) *int64 { return &v }
