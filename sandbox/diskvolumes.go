package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// imageVolumeSource matches where containerd's CRI mounts an image volume
// (a pod's `image:` volume) on the host and binds it from:
// <CRI state dir>/image-volumes/<pod sandbox id>/<manifest digest>, or a
// directory in it for a subPath. The first group is the pod's id.
var imageVolumeSource = regexp.MustCompile(`^/.+/io\.containerd\.grpc\.v1\.cri/image-volumes/([^/]+)/[0-9a-f]{64}(/.*)?$`)

// imageVolumePod returns the pod id an image volume's source names; ok is
// false when source is no image volume.
func imageVolumePod(source string) (pod string, ok bool) {
	sm := imageVolumeSource.FindStringSubmatch(filepath.Clean(source))
	if sm == nil {
		return "", false
	}
	return sm[1], true
}

// isImageVolume says whether m binds an image volume (of any pod): such a
// mount is hot-plugged as a disk, never copied, emptied or refused as a
// host directory.
func isImageVolume(m specs.Mount) bool {
	if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
		return false
	}
	_, ok := imageVolumePod(m.Source)
	return ok
}

// volumeSerial is the virtio-blk serial of a container's i-th volume disk:
// "v" and 19 hex digits of a digest (api.IsDiskVolumeSerial).
func volumeSerial(containerID string, i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", containerID, i))
	return "v" + hex.EncodeToString(sum[:])[:19]
}

// diskVolumes are the volume disks attached for each container.
type diskVolumes struct {
	mu    sync.Mutex
	disks map[string][]attachedDisk // container id → its disks
}

type attachedDisk struct{ serial, image string }

func (d *diskVolumes) add(containerID string, a attachedDisk) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.disks == nil {
		d.disks = map[string][]attachedDisk{}
	}
	d.disks[containerID] = append(d.disks[containerID], a)
}

func (d *diskVolumes) take(containerID string) []attachedDisk {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.disks[containerID]
	delete(d.disks, containerID)
	return a
}

// attachDiskVolumes gives a container its image volumes: each directory
// an image volume mount binds becomes a read-only EROFS image (the
// rootfs's mkfs path: links, modes, owners and large files kept, and the
// host cannot change it under the container), hot-plugged read-only. The
// guest mounts each read-only at the mount's destination. A source that
// is a file (a subPath naming one) is left to the file copy. On error
// nothing stays attached.
func (s *vmSandbox) attachDiskVolumes(ctx context.Context, containerID string, sp *specs.Spec) (_ []*api.DiskVolume, retErr error) {
	var out []*api.DiskVolume
	defer func() {
		if retErr != nil {
			s.detachDiskVolumes(context.WithoutCancel(ctx), containerID)
		}
	}()
	for _, m := range sp.Mounts {
		if !isImageVolume(m) {
			continue
		}
		pod, _ := imageVolumePod(m.Source)
		if pod != s.opts.ID {
			return nil, fmt.Errorf("container %s: mount %s: %s is an image volume of pod %s, not of this pod (%s); containerd binds a pod only its own: %w",
				containerID, m.Destination, m.Source, pod, s.opts.ID, errdefs.ErrInvalidArgument)
		}
		fi, err := os.Stat(m.Source)
		if err != nil {
			return nil, fmt.Errorf("container %s: image volume at %s: %w", containerID, m.Destination, err)
		}
		if !fi.IsDir() {
			continue
		}
		if len(out) == api.MaxDiskVolumes {
			return nil, fmt.Errorf("container %s: more than %d image volumes; each is a disk of the pod's VM: mount fewer: %w", containerID, api.MaxDiskVolumes, errdefs.ErrInvalidArgument)
		}
		hot, ok := s.vm.(hypervisor.DiskHotplugger)
		if !ok {
			return nil, fmt.Errorf("container %s: image volume at %s: hypervisor %q cannot attach disks to a running VM: %w", containerID, m.Destination, s.vmConfig.Driver, errdefs.ErrNotImplemented)
		}
		serial := volumeSerial(containerID, len(out))
		image, err := s.buildVolumeImage(ctx, m.Source, serial)
		if err != nil {
			return nil, fmt.Errorf("container %s: image volume at %s: %w", containerID, m.Destination, err)
		}
		if err := hot.AddDisk(ctx, hypervisor.Disk{ID: serial, Path: image, ReadOnly: true}); err != nil {
			os.Remove(image)
			return nil, fmt.Errorf("container %s: attach image volume at %s: %w", containerID, m.Destination, err)
		}
		s.dvols.add(containerID, attachedDisk{serial: serial, image: image})
		out = append(out, &api.DiskVolume{Serial: serial, Destination: filepath.Clean(m.Destination), Fstype: "erofs"})
	}
	return out, nil
}

// buildVolumeImage writes the EROFS image of dir in the pod's state.
func (s *vmSandbox) buildVolumeImage(ctx context.Context, dir, serial string) (string, error) {
	images := filepath.Join(s.opts.StateDir, "volumes")
	if err := os.MkdirAll(images, 0o700); err != nil {
		return "", err
	}
	image := filepath.Join(images, serial+".erofs")
	if err := buildRootfsImage(ctx, mkfsPath(s.opts.Config), "", dir, nil, image); err != nil {
		return "", err
	}
	return image, nil
}

// detachDiskVolumes removes a container's volume disks and their images,
// each hot-unplug bounded as the rootfs's is.
func (s *vmSandbox) detachDiskVolumes(ctx context.Context, containerID string) {
	for _, a := range s.dvols.take(containerID) {
		if hot, ok := s.vm.(hypervisor.DiskHotplugger); ok {
			rctx, cancel := context.WithTimeout(ctx, rootfsDetachTimeout)
			if err := hot.RemoveDisk(rctx, a.serial); err != nil {
				log.G(ctx).WithError(err).WithField("container", containerID).Warn("detach image volume disk")
			}
			cancel()
		}
		if a.image != "" {
			os.Remove(a.image)
		}
	}
}

// releaseDiskVolumes detaches a deleted container's volume disks in the
// background, as its rootfs is.
func (s *vmSandbox) releaseDiskVolumes(ctx context.Context, containerID string) {
	go s.detachDiskVolumes(context.WithoutCancel(ctx), containerID)
}
