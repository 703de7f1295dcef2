package spec

import (
	"fmt"
	"path"
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

// EmptyDirName returns the volume name when source is a kubelet emptyDir:
// <kubelet root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>.
func EmptyDirName(source string) (string, bool) {
	dir, name := path.Split(path.Clean(source))
	dir = path.Clean(dir)
	if path.Base(dir) != "kubernetes.io~empty-dir" || path.Base(path.Dir(dir)) != "volumes" || name == "" {
		return "", false
	}
	return name, true
}

// EmptyDirSize returns the size the annotations give emptyDir name, in
// bytes (0: none given). A malformed value is an error naming it.
func EmptyDirSize(annotations map[string]string, name string) (int64, error) {
	key := EmptyDirSizeAnnotation + name
	v, ok := annotations[key]
	if !ok {
		return 0, nil
	}
	n, err := parseQuantity(v)
	if err != nil || n <= 0 || n > maxEmptyDirBytes {
		return 0, fmt.Errorf("spec.annotations[%s]: %q is not a size: want a Kubernetes quantity such as 64Mi or 1G, at most 1Ti: %w", key, v, errdefs.ErrInvalidArgument)
	}
	return n, nil
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
