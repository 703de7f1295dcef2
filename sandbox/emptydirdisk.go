package sandbox

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/guest-assets/agent/spec"
	"github.com/coco-runtime/coco/hypervisor"
)

// emptyDirDiskFile is the sparse file backing a disk-backed emptyDir,
// inside the kubelet's host directory of that emptyDir: the kubelet counts
// what the guest wrote (allocated blocks) against the volume's sizeLimit
// and removes the file with the pod.
const emptyDirDiskFile = ".coco-emptydir.img"

// emptyDirDisks are the disk-backed emptyDirs of a pod already attached to
// its VM, by host directory: one disk per emptyDir, shared by every
// container that mounts it, for the VM's life.
type emptyDirDisks struct {
	mu       sync.Mutex
	attached map[string]bool
}

// emptyDirVolume returns the host directory of the emptyDir a bind mount
// shows (the volume or a subPath of it), or "".
func emptyDirVolume(m specs.Mount) string {
	if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
		return ""
	}
	if isEmptyDir(m.Source) {
		return path.Clean(m.Source)
	}
	if isEmptyDirSubPath(m.Source) {
		return subPathVolume(m.Source)
	}
	return ""
}

// attachEmptyDirDisks hot-plugs a sparse file of the annotated size for
// each disk-backed emptyDir (emptydir.coco-runtime.io/<volume>:
// "<size>,disk") that sp mounts and the VM does not have yet, with the
// serial the guest derives from the same path (spec.EmptyDirSerial).
func (s *vmSandbox) attachEmptyDirDisks(ctx context.Context, sp *specs.Spec) error {
	for _, m := range sp.Mounts {
		vol := emptyDirVolume(m)
		if vol == "" {
			continue
		}
		size, disk, err := spec.EmptyDirSize(sp.Annotations, path.Base(vol))
		if err != nil || !disk {
			continue // a bad annotation is the guest's to refuse, naming it
		}
		if err := s.attachEmptyDirDisk(ctx, vol, size); err != nil {
			return fmt.Errorf("mount %s: disk-backed emptyDir %s: %w", m.Destination, path.Base(vol), err)
		}
	}
	return nil
}

func (s *vmSandbox) attachEmptyDirDisk(ctx context.Context, vol string, size int64) error {
	d := &s.emptyDirDisks
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.attached[vol] {
		return nil
	}
	hot, ok := s.vm.(hypervisor.DiskHotplugger)
	if !ok {
		return fmt.Errorf("hypervisor %q cannot attach disks to a running VM: %w", s.vmConfig.Driver, errdefs.ErrNotImplemented)
	}
	file := filepath.Join(vol, emptyDirDiskFile)
	// A file left by an earlier VM of the pod is emptied: its content was
	// under a key that died with that VM.
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := hot.AddDisk(ctx, hypervisor.Disk{ID: spec.EmptyDirSerial(vol), Path: file}); err != nil {
		return fmt.Errorf("attach %s: %w", file, err)
	}
	if d.attached == nil {
		d.attached = map[string]bool{}
	}
	d.attached[vol] = true
	return nil
}
