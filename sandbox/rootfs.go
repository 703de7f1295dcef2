package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
)

// diskSerial is the virtio-blk serial the guest finds a container's root
// filesystem by. virtio-blk serials hold at most 20 bytes, so ids are hashed.
func diskSerial(containerID string) string {
	sum := sha256.Sum256([]byte(containerID))
	return "r" + hex.EncodeToString(sum[:])[:19]
}

// buildRootfsImage turns a container's root filesystem into a read-only
// EROFS image the VM can attach as a disk. The host-side files are copied
// into the image, so the host cannot change them under the running container.
// mounts are the snapshotter's mounts from the task request; when empty the
// spec's root directory is used as is (ctr run --rootfs, a prepared bundle):
// root is spec.Root.Path, relative to the bundle unless absolute.
func buildRootfsImage(ctx context.Context, mkfs, bundle, root string, mounts []*types.Mount, image string) (err error) {
	if root == "" {
		root = "rootfs"
	}
	src := root
	if !filepath.IsAbs(src) {
		src = filepath.Join(bundle, root)
	}
	if len(mounts) > 0 {
		target, err := os.MkdirTemp(filepath.Dir(image), "rootfs-mnt-")
		if err != nil {
			return err
		}
		defer os.Remove(target)
		ms := make([]mount.Mount, 0, len(mounts))
		for _, m := range mounts {
			ms = append(ms, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
		}
		if err := mount.All(ms, target); err != nil {
			return fmt.Errorf("mount container rootfs for imaging: %w", err)
		}
		defer func() {
			if uerr := mount.UnmountAll(target, 0); uerr != nil && err == nil {
				err = fmt.Errorf("unmount %s: %w", target, uerr)
			}
		}()
		src = target
	}
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("container rootfs %s: %w: %w", src, err, errdefs.ErrInvalidArgument)
	}
	if mkfs == "" {
		mkfs = "mkfs.erofs"
	}
	// Fixed timestamps and UUID make the image a function of its content.
	cmd := exec.CommandContext(ctx, mkfs, "--quiet", "-T0", "-U", "00000000-0000-0000-0000-000000000000", image, src)
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.Remove(image)
		if errorsIsNotFound(err) {
			return fmt.Errorf("%s not found: install erofs-utils (scripts/install-deps.sh) or set [rootfs] mkfs in the config", mkfs)
		}
		return fmt.Errorf("%s %s: %w: %s", mkfs, src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func errorsIsNotFound(err error) bool {
	return strings.Contains(err.Error(), "executable file not found") || os.IsNotExist(err)
}
