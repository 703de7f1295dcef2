package spec

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// EmptyDirSizeAnnotation prefixes the pod annotation that caps a
// memory-backed emptyDir in the guest: emptydir.coco-runtime.io/<volume>:
// "64Mi". The kubelet does not pass an emptyDir's sizeLimit (nor its
// medium) through the CRI, so the owner states it on the pod; containerd
// copies pod annotations into the container's spec when the runtime
// handler lists them in pod_annotations, and the policy sees them there.
const EmptyDirSizeAnnotation = "emptydir.coco-runtime.io/"

// maxEmptyDirBytes bounds a size annotation (1 TiB); tmpfs pages are
// allocated only when written.
const maxEmptyDirBytes = 1 << 40

// emptyDirKind is the kubelet's emptyDir plugin directory.
const emptyDirKind = "kubernetes.io~empty-dir"

// EmptyDirSource splits a bind mount source that names a kubelet emptyDir,
// <kubelet root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>, or a
// path in one (<that>/<sub>: the shim's form for a subPath of it, since
// the kubelet's own source, .../volume-subpaths/<name>/<container>/<i>,
// names no volume). It returns the emptyDir's path, its name and sub
// ("" for the whole volume). ok is false for any other source; a sub that
// climbs out ("..") is an error, whatever the host meant by it.
func EmptyDirSource(source string) (dir, name, sub string, ok bool, err error) {
	parts := strings.Split(source, "/")
	for i := 0; i+2 < len(parts); i++ {
		if parts[i] != "volumes" || parts[i+1] != emptyDirKind || parts[i+2] == "" || parts[i+2] == "." || parts[i+2] == ".." {
			continue
		}
		rest := parts[i+3:]
		if slices.Contains(rest, "..") {
			return "", "", "", false, fmt.Errorf("%q: a path in an emptyDir may not contain \"..\"", source)
		}
		dir, name = path.Clean(strings.Join(parts[:i+3], "/")), parts[i+2]
		if sub = path.Clean(strings.Join(rest, "/")); sub == "." {
			sub = ""
		}
		return dir, name, sub, true, nil
	}
	return "", "", "", false, nil
}

// EmptyDirDiskSuffix after the size asks for a disk-backed emptyDir:
// "1Gi,disk" is a sparse host file of 1 GiB hot-plugged into the guest,
// encrypted there under a key that never leaves it, with a file system
// made in the guest; without it the emptyDir is a guest tmpfs. The owner
// chooses (the policy sees the annotation): the CRI carries no medium.
const EmptyDirDiskSuffix = ",disk"

// EmptyDirSize returns the size the annotations give emptyDir name, in
// bytes (0: none given), and whether it is disk-backed. A malformed value
// is an error naming it.
func EmptyDirSize(annotations map[string]string, name string) (int64, bool, error) {
	key := EmptyDirSizeAnnotation + name
	v, ok := annotations[key]
	if !ok {
		return 0, false, nil
	}
	size, disk := strings.CutSuffix(v, EmptyDirDiskSuffix)
	n, err := parseQuantity(size)
	if err != nil || n <= 0 || n > maxEmptyDirBytes || (disk && n < minDiskBytes) {
		return 0, false, fmt.Errorf("spec.annotations[%s]: %q is not a size: want a Kubernetes quantity such as 64Mi or 1G, at most 1Ti, "+
			"followed by %q for a disk of at least 1Mi: %w", key, v, EmptyDirDiskSuffix, errdefs.ErrInvalidArgument)
	}
	return n, disk, nil
}

// minDiskBytes is the smallest disk-backed emptyDir (the guest's mkfs).
const minDiskBytes = 1 << 20

// EmptyDirSerial is the serial of the disk the host hot-plugs for the
// disk-backed emptyDir at hostDir: both sides derive it from the path.
func EmptyDirSerial(hostDir string) string {
	return "e" + VolumeKey(hostDir)[:19]
}

// parseQuantity reads the integer forms of a Kubernetes quantity: digits
// with an optional binary (Ki..Ti) or decimal (k..T) suffix.
func parseQuantity(v string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		s string
		m int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}} {
		if strings.HasSuffix(v, u.s) {
			v, mult = strings.TrimSuffix(v, u.s), u.m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxEmptyDirBytes/mult+1 {
		return 0, fmt.Errorf("bad quantity")
	}
	return n * mult, nil
}
