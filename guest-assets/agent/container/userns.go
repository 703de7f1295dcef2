package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/agent/spec"
)

// A container in a user namespace (a pod with hostUsers: false) runs as
// ids the namespace maps to unprivileged guest ids, while the bundle and
// its rootfs belong to the guest's root: the OCI runtime, already in the
// namespace, could not even open it. The rootfs disk the host made holds
// ids already mapped (containerd mounts the pod's snapshot with its
// uidmap); an image pulled in the guest holds the image's own, so it is
// given id-mapped. Either way the container sees the owners the image
// says. Its upper layer belongs to the namespace's root; the sandbox
// container's small tmpfs is chowned to it (its namespace does not exist
// before it runs).

// rootfsUserNS returns the user namespace file whose mapping a container's
// rootfs layers get ("" for none), refusing what the guest cannot map.
func rootfsUserNS(ns *spec.UserNamespace, sandbox bool) (string, error) {
	switch {
	case ns == nil, sandbox:
		return "", nil
	case ns.Path != "":
		return ns.Path, nil
	}
	return "", fmt.Errorf("spec.linux.namespaces: a user namespace of the container's own (not the pod's) is not supported: its rootfs could not be id-mapped before it exists: %w", errdefs.ErrNotImplemented)
}

// idmapClone mounts at dst a copy of the mount at src whose ids are
// mapped through the user namespace of nsFile: a file of guest uid u
// shows as the namespace's host id for container id u.
func idmapClone(src, dst, nsFile string) error {
	ns, err := os.Open(nsFile)
	if err != nil {
		return fmt.Errorf("id-mapped mount of %s: the user namespace: %w", src, err)
	}
	defer ns.Close()
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("id-mapped mount of %s: open_tree: %w", src, err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("id-mapped mount of %s: mount_setattr: %w", src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("id-mapped mount of %s on %s: move_mount: %w", src, dst, err)
	}
	return nil
}

// userNSLayers gives the overlay's upper directory to the namespace's
// root and, if idmap, lower as an id-mapped mount under the bundle, and
// returns the lower to use. The upper layer is not id-mapped: overlayfs
// copies up with its mounter's ids (the guest's root), which the
// namespace's mapping has no place for; a container's own upper layer may
// as well hold its mapped ids, as the host's snapshot does.
func (m *Manager) userNSLayers(p *prepared, lower, upper, nsFile string, idmap bool) (string, error) {
	uid, gid, err := nsRoot(nsFile)
	if err != nil {
		return "", err
	}
	if err := os.Chown(upper, int(uid), int(gid)); err != nil {
		return "", err
	}
	if !idmap {
		return lower, nil
	}
	mlower := filepath.Join(p.bundle, ".idmap", "lower")
	if err := os.MkdirAll(mlower, 0o700); err != nil {
		return "", err
	}
	if err := idmapClone(lower, mlower, nsFile); err != nil {
		return "", err
	}
	p.mounts = append([]string{mlower}, p.mounts...)
	return mlower, nil
}

// nsRoot returns the guest ids of the root of the user namespace nsFile
// (/proc/<pid>/ns/user), read from its process's uid_map and gid_map.
func nsRoot(nsFile string) (uid, gid uint32, err error) {
	proc := filepath.Dir(filepath.Dir(nsFile))
	ids := [2]uint32{}
	for i, f := range []string{"uid_map", "gid_map"} {
		b, err := os.ReadFile(filepath.Join(proc, f))
		if err != nil {
			return 0, 0, fmt.Errorf("the pod's user namespace: %w", err)
		}
		m, err := parseIDMap(string(b))
		if err != nil {
			return 0, 0, fmt.Errorf("the pod's user namespace: %s: %w", f, err)
		}
		id, ok := spec.HostID(m, 0)
		if !ok {
			return 0, 0, fmt.Errorf("the pod's user namespace maps no root (%s): its containers' rootfs cannot be given to it: %w", f, errdefs.ErrFailedPrecondition)
		}
		ids[i] = id
	}
	return ids[0], ids[1], nil
}

// parseIDMap reads /proc/<pid>/uid_map's "inside outside count" lines.
func parseIDMap(text string) ([]specs.LinuxIDMapping, error) {
	var out []specs.LinuxIDMapping
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var r specs.LinuxIDMapping
		if _, err := fmt.Sscan(line, &r.ContainerID, &r.HostID, &r.Size); err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// chownPauseRoot gives the pod's root (container ids 0) the sandbox
// container's rootfs directories, which hold nothing but /pause.
func chownPauseRoot(rootfs string, ns *spec.UserNamespace) error {
	uid, uok := spec.HostID(ns.UID, 0)
	gid, gok := spec.HostID(ns.GID, 0)
	if !uok || !gok {
		return fmt.Errorf("spec.linux.uidMappings/gidMappings: container id 0 is not mapped; the pod's root must own the sandbox container's rootfs: %w", errdefs.ErrInvalidArgument)
	}
	for _, d := range []string{"", "proc", "dev", "sys", "etc"} {
		if err := os.Lchown(filepath.Join(rootfs, d), int(uid), int(gid)); err != nil {
			return err
		}
	}
	return nil
}
