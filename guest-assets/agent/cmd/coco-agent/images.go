//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/agent/boot"
	"github.com/coco-runtime/coco/guest-assets/agent/cdh"
	"github.com/coco-runtime/coco/guest-assets/agent/image"
	"github.com/coco-runtime/coco/guest-assets/agent/scratch"
	"github.com/coco-runtime/coco/guest-assets/kmod"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// imageDir holds the images the guest pulls: a tmpfs of its own (the
// layer store needs trusted xattrs and whiteout devices, and a size of its
// own keeps a big image from filling /run).
const imageDir = runDir + "/images"

// guestImages pulls container images in the guest (rootfs.guest_pull),
// once the owner's init-data says how.
type guestImages struct {
	owner   *cdh.Pending
	drivers <-chan struct{} // closed once the disk drivers are loaded
	once    sync.Once
	store   *image.Store
	err     error
}

func (g *guestImages) pull(ctx context.Context, ref string) (string, error) {
	o, err := g.owner.Owned(ctx)
	if err != nil {
		return "", err
	}
	select {
	case <-g.drivers:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	g.once.Do(func() { g.store, g.err = openImageStore(imageDir) })
	if g.err != nil {
		return "", g.err
	}
	return cdh.NewPuller(g.store, o.Broker, o.Image).Pull(ctx, ref)
}

// scratchModules are the modules of the encrypted scratch disk, loaded by
// the first guest pull that finds one (a guest kernel with them built in
// lists none).
var scratchModules = []string{"dm_mod", "dm_crypt", "xts"}

// openImageStore mounts the image tmpfs and opens the layer store on it
// with the tmpfs's size as its limit, so an image too big fails with the
// store's clear error rather than ENOSPC halfway through a layer. The size
// is half the guest's memory (tmpfs's own default), plus the scratch disk
// when the host attached one (rootfs.scratch_mib): it becomes encrypted
// swap, and the store's pages spill there.
func openImageStore(dir string) (*image.Store, error) {
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		return nil, err
	}
	size := int64(info.Totalram) * int64(info.Unit) / 2
	if dev := boot.DiskBySerial("/sys/block", "/dev", api.ScratchDiskSerial); dev != "" {
		swap, err := encryptedSwap(dev)
		if err != nil {
			return nil, err
		}
		size += swap
		log.L.Infof("scratch disk %s: encrypted swap of %d MiB under a key only this guest holds", dev, swap>>20)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := unix.Mount("images", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("mode=0700,size=%d", size)); err != nil {
		return nil, fmt.Errorf("image store tmpfs: %w", err)
	}
	return image.NewStore(dir, size)
}

// encryptedSwap loads the scratch disk's modules, makes dev encrypted swap,
// and keeps the containers' own memory out of it: only the agent's pages
// (the image store) may swap, as a Kubernetes node without swap promises.
func encryptedSwap(dev string) (int64, error) {
	mods, err := kmod.ReadManifest(kmod.DefaultManifest)
	if err != nil {
		return 0, err
	}
	picked, _ := kmod.Take(mods, scratchModules...)
	if err := kmod.Load(picked); err != nil {
		return 0, fmt.Errorf("scratch disk: %w", err)
	}
	parent := filepath.Join(cgroupRoot, cgroupParent)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(parent, "memory.swap.max"), []byte("0"), 0o644); err != nil {
		return 0, fmt.Errorf("scratch disk: keep containers out of swap: %w", err)
	}
	return scratch.Swap(dev)
}
