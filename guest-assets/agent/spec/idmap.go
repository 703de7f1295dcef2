package spec

import (
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// MaxIDMappings bounds the ranges of one id mapping; containerd sends one
// per kind, the kernel takes up to 340.
const MaxIDMappings = 64

// validateIDMappings checks a uid or gid mapping the host sent: the
// kernel refuses a bad one too, but only once the OCI runtime writes it,
// with an error naming no field. Each range is non-empty and ends within
// the 32-bit ids ((uint32)-1 is no id), and no two ranges overlap on
// either side (the kernel's rule: the mapping must be a bijection).
func validateIDMappings(field string, m []specs.LinuxIDMapping) error {
	if len(m) > MaxIDMappings {
		return invalid(field, "%d ranges, at most %d", len(m), MaxIDMappings)
	}
	for i, r := range m {
		f := fmt.Sprintf("%s[%d]", field, i)
		if r.Size == 0 {
			return invalid(f+".size", "0: a range maps at least one id")
		}
		for _, start := range []uint32{r.ContainerID, r.HostID} {
			if uint64(start)+uint64(r.Size) > 1<<32-1 {
				return invalid(f, "%d+%d passes the largest id %d", start, r.Size, uint32(1<<32-2))
			}
		}
		for j, o := range m[:i] {
			if overlaps(r.ContainerID, o.ContainerID, r.Size, o.Size) {
				return invalid(f+".containerID", "%d+%d overlaps range %d's container ids", r.ContainerID, r.Size, j)
			}
			if overlaps(r.HostID, o.HostID, r.Size, o.Size) {
				return invalid(f+".hostID", "%d+%d overlaps range %d's host ids", r.HostID, r.Size, j)
			}
		}
	}
	return nil
}

func overlaps(a, b, asize, bsize uint32) bool {
	return uint64(a) < uint64(b)+uint64(bsize) && uint64(b) < uint64(a)+uint64(asize)
}

// validateSpecIDMappings checks the spec's user namespace mappings and
// those of its id-mapped mounts.
func validateSpecIDMappings(s *specs.Spec) error {
	if err := validateIDMappings("linux.uidMappings", s.Linux.UIDMappings); err != nil {
		return err
	}
	if err := validateIDMappings("linux.gidMappings", s.Linux.GIDMappings); err != nil {
		return err
	}
	for i, m := range s.Mounts {
		if err := validateIDMappings(fmt.Sprintf("mounts[%d].uidMappings", i), m.UIDMappings); err != nil {
			return err
		}
		if err := validateIDMappings(fmt.Sprintf("mounts[%d].gidMappings", i), m.GIDMappings); err != nil {
			return err
		}
	}
	hasUserNS := slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace })
	if !hasUserNS && (len(s.Linux.UIDMappings) > 0 || len(s.Linux.GIDMappings) > 0) {
		return invalid("linux.uidMappings", "id mappings without a user namespace in linux.namespaces")
	}
	return nil
}

// HostID maps container id id through m; false if m does not map it.
func HostID(m []specs.LinuxIDMapping, id uint32) (uint32, bool) {
	for _, r := range m {
		if id >= r.ContainerID && uint64(id) < uint64(r.ContainerID)+uint64(r.Size) {
			return r.HostID + (id - r.ContainerID), true
		}
	}
	return 0, false
}

// UserNamespace is the user namespace of a rewritten spec: Path, the
// namespace it joins (the pod's), or a new one from UID and GID; nil for
// none.
type UserNamespace struct {
	Path     string
	UID, GID []specs.LinuxIDMapping
}

// UserNS returns the rewritten spec's user namespace, if any.
func (r *Result) UserNS() *UserNamespace {
	l := r.Spec.Linux
	for _, n := range l.Namespaces {
		if n.Type == specs.UserNamespace {
			return &UserNamespace{Path: n.Path, UID: l.UIDMappings, GID: l.GIDMappings}
		}
	}
	return nil
}
