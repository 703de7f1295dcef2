package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount mounts the image's root filesystem at target: an overlay of its
// shared, read-only layers under a writable layer private to container id
// (containers/<id>/{upper,work} in the store, so the container's writes
// also land on guest-only storage).
func (s *Store) Mount(im *Image, id, target string) error {
	dir, err := s.containerDir(id)
	if err != nil {
		return err
	}
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	lower := im.LowerDir()
	if lower == "" { // an image without layers: overlayfs wants one lower
		lower = filepath.Join(dir, "empty")
		if err := os.MkdirAll(lower, 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if len(opts) >= os.Getpagesize() {
		return fmt.Errorf("image %s: %d layers make overlay options longer than a page; the store root %q should be shorter", im.Reference, len(im.Layers), s.root)
	}
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount image %s at %s: %w", im.Reference, target, err)
	}
	return nil
}

// Unmount undoes Mount and deletes the container's writable layer.
func (s *Store) Unmount(id, target string) error {
	dir, err := s.containerDir(id)
	if err != nil {
		return err
	}
	if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return os.RemoveAll(dir)
}

func (s *Store) containerDir(id string) (string, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return "", errors.New("container id: not a single path component")
	}
	return filepath.Join(s.root, "containers", id), nil
}
