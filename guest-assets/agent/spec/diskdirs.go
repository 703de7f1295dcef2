package spec

import (
	"fmt"
	"slices"
	"sort"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// readOnlyBind is m made read-only: the host's word on a disk volume's
// options is not taken ("rw" dropped, "ro" added).
func readOnlyBind(m specs.Mount) specs.Mount {
	m.Options = slices.DeleteFunc(m.Options, func(o string) bool { return o == "rw" || o == "rrw" })
	if !slices.Contains(m.Options, "ro") {
		m.Options = append(m.Options, "ro")
	}
	return m
}

// disksUsed refuses a disk volume whose destination no bind mount of the
// spec has: the host hot-plugged content for a mount that does not exist.
func disksUsed(disks map[string]string, used map[string]bool) error {
	var unused []string
	for d := range disks {
		if !used[d] {
			unused = append(unused, d)
		}
	}
	if len(unused) == 0 {
		return nil
	}
	sort.Strings(unused)
	return fmt.Errorf("disk_volumes: destination %q has no bind mount in the spec: %w", unused[0], errdefs.ErrInvalidArgument)
}
