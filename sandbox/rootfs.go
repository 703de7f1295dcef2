package sandbox

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
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
		if free, ok := bytesFree(filepath.Dir(image)); ok && free < fullBelow {
			// mkfs.erofs says "Error 28" among other lines; say it plainly.
			return fmt.Errorf("container rootfs image %s: the state filesystem is full (%d bytes free): free space there or point %s at a larger filesystem: %s: %w",
				image, free, "COCO_RUN_DIR", strings.TrimSpace(string(out)), errdefs.ErrResourceExhausted)
		}
		return fmt.Errorf("%s %s: %w: %s", mkfs, src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// fullBelow is the free space under which a failed image write is blamed
// on a full filesystem.
const fullBelow = 1 << 20

// bytesFree is what an unprivileged writer may still write under dir.
func bytesFree(dir string) (uint64, bool) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}

func errorsIsNotFound(err error) bool {
	return strings.Contains(err.Error(), "executable file not found") || os.IsNotExist(err)
}

// A guest kernel line about PCI hot-plug (the shpchp, pciehp and acpiphp
// drivers, the hot-plug core) that reports a failure.
var (
	hotplugDriver  = regexp.MustCompile(`(?i)shpchp|pciehp|acpiphp|pci_hp|hot-?plug`)
	hotplugFailure = regexp.MustCompile(`(?i)fail|error|unable|cannot`)
)

// hotplugErrors picks the guest kernel's PCI hot-plug failures out of its
// console log, at most a few lines joined with "; ", "" when there are none.
// When a hot-plugged rootfs disk never appears in the guest, they say why
// (a hot-plug slot that failed to register), and the console log goes away
// with the pod. The text comes from the guest: control bytes are dropped.
func hotplugErrors(consoleLog string) string {
	f, err := os.Open(consoleLog)
	if err != nil {
		return ""
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(io.LimitReader(f, 4<<20))
	for sc.Scan() && len(found) < 4 {
		l := sc.Text()
		if hotplugDriver.MatchString(l) && hotplugFailure.MatchString(l) {
			found = append(found, strings.TrimSpace(printable(l)))
		}
	}
	return strings.Join(found, "; ")
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
