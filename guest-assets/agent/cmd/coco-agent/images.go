//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/agent/cdh"
	"github.com/coco-runtime/coco/guest-assets/agent/image"
)

// imageDir holds the images the guest pulls: a tmpfs of its own (the
// layer store needs trusted xattrs and whiteout devices, and a size of its
// own keeps a big image from filling /run).
const imageDir = runDir + "/images"

// guestImages pulls container images in the guest (rootfs.guest_pull),
// once the owner's init-data says how.
type guestImages struct {
	owner *cdh.Pending
	once  sync.Once
	store *image.Store
	err   error
}

func (g *guestImages) pull(ctx context.Context, ref string) (string, error) {
	o, err := g.owner.Owned(ctx)
	if err != nil {
		return "", err
	}
	g.once.Do(func() { g.store, g.err = openImageStore(imageDir) })
	if g.err != nil {
		return "", g.err
	}
	return cdh.NewPuller(g.store, o.Broker, o.Image).Pull(ctx, ref)
}

// openImageStore mounts the image tmpfs — half the guest's memory, tmpfs's
// own default, used only as layers arrive — and opens the store on it with
// that size as its limit, so an image too big fails with the store's
// clear error rather than ENOSPC halfway through a layer.
func openImageStore(dir string) (*image.Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := unix.Mount("images", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700,size=50%"); err != nil {
		return nil, fmt.Errorf("image store tmpfs: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil, err
	}
	return image.NewStore(dir, int64(st.Blocks)*st.Bsize)
}
