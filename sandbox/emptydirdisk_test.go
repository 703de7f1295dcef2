package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/guest-assets/agent/spec"
	"github.com/coco-runtime/coco/hypervisor"
)

// diskRecorder is a VM that records the disks hot-plugged into it.
type diskRecorder struct {
	hypervisor.VM
	disks []hypervisor.Disk
}

func (v *diskRecorder) AddDisk(_ context.Context, d hypervisor.Disk) error {
	v.disks = append(v.disks, d)
	return nil
}

func (v *diskRecorder) RemoveDisk(context.Context, string) error { return nil }

// A disk-backed emptyDir gets one sparse file of the annotated size in its
// host directory, hot-plugged writable once per pod under the serial the
// guest derives from the same path, whether a container mounts the volume
// or a subPath of it; tmpfs emptyDirs and other mounts get none.
func TestAttachEmptyDirDisks(t *testing.T) {
	pod := filepath.Join(t.TempDir(), "pods", "uid1")
	vol := filepath.Join(pod, "volumes", emptyDirKind, "data")
	mem := filepath.Join(pod, "volumes", emptyDirKind, "mem")
	os.MkdirAll(mem, 0o750)
	sub := kubeletSubPath(t, pod, "data", "logs", "side", 0)
	bind := func(dst, src string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind"}}
	}
	ann := map[string]string{spec.EmptyDirSizeAnnotation + "data": "8Mi,disk", spec.EmptyDirSizeAnnotation + "mem": "8Mi"}
	vm := &diskRecorder{}
	s := &vmSandbox{vm: vm}
	whole := &specs.Spec{Annotations: ann, Mounts: []specs.Mount{bind("/data", vol), bind("/mem", mem)}}
	subOnly := &specs.Spec{Annotations: ann, Mounts: []specs.Mount{bind("/logs", sub)}}
	for _, sp := range []*specs.Spec{subOnly, whole} {
		if err := s.attachEmptyDirDisks(context.Background(), sp); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(vol, emptyDirDiskFile)
	if len(vm.disks) != 1 || vm.disks[0] != (hypervisor.Disk{ID: spec.EmptyDirSerial(vol), Path: file}) {
		t.Fatalf("disks %+v", vm.disks)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Size() != 8<<20 {
		t.Fatalf("backing file: %v %v", fi, err)
	}
	// Sparse: nothing allocated until the guest writes.
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Blocks != 0 {
		t.Errorf("backing file not sparse: %+v", fi.Sys())
	}
	if _, err := os.Stat(filepath.Join(mem, emptyDirDiskFile)); !os.IsNotExist(err) {
		t.Errorf("a tmpfs emptyDir got a disk file: %v", err)
	}
}
