package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

const testDigest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestImageVolumePod(t *testing.T) {
	for src, want := range map[string]string{
		"/run/containerd/io.containerd.grpc.v1.cri/image-volumes/p1/" + testDigest:            "p1",
		"/run/containerd/io.containerd.grpc.v1.cri/image-volumes/p1/" + testDigest + "/sub/d": "p1",
		"/run/containerd/io.containerd.grpc.v1.cri/image-volumes/p1/abc":                      "", // no digest
		"/data/image-volumes/p1/" + testDigest:                                                "", // not the CRI's state
		"/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/x":                           "",
	} {
		pod, ok := imageVolumePod(src)
		if pod != want || ok != (want != "") {
			t.Errorf("imageVolumePod(%s) = %q, %v; want %q", src, pod, ok, want)
		}
	}
	a, b := volumeSerial("c1", 0), volumeSerial("c1", 1)
	if !api.IsDiskVolumeSerial(a) || !api.IsDiskVolumeSerial(b) || a == b || a == diskSerial("c1") {
		t.Fatalf("volume serials %q %q: want distinct serials of the volume form", a, b)
	}
}

// hotplugRecorder is a VM that records hot-plugged disks; fail makes the
// AddDisk of that serial fail.
type hotplugRecorder struct {
	hypervisor.VM
	mu       sync.Mutex
	attached map[string]string
	writable map[string]bool
	fail     string
}

func (v *hotplugRecorder) AddDisk(_ context.Context, d hypervisor.Disk) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if d.ID == v.fail {
		return errors.New("no free hot-plug slot")
	}
	if !d.ReadOnly {
		if v.writable == nil {
			v.writable = map[string]bool{}
		}
		v.writable[d.ID] = true
	}
	v.attached[d.ID] = d.Path
	return nil
}

func (v *hotplugRecorder) RemoveDisk(ctx context.Context, id string) error {
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("RemoveDisk without a deadline")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.attached, id)
	return nil
}

func imageVolumeSandbox(t *testing.T) (*vmSandbox, *hotplugRecorder, string) {
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Skip("mkfs.erofs missing: install erofs-utils (scripts/install-deps.sh)")
	}
	cri := filepath.Join(t.TempDir(), "io.containerd.grpc.v1.cri")
	vol := filepath.Join(cri, "image-volumes", "pod1", testDigest)
	os.MkdirAll(filepath.Join(vol, "bin"), 0o755)
	os.WriteFile(filepath.Join(vol, "bin", "big"), make([]byte, 3<<20), 0o755) // over the file copy's 1 MiB
	os.Symlink("big", filepath.Join(vol, "bin", "link"))
	vm := &hotplugRecorder{attached: map[string]string{}}
	s := &vmSandbox{vm: vm, opts: Options{ID: "pod1", StateDir: t.TempDir(), Config: &configs.Config{}}}
	return s, vm, vol
}

// An image volume becomes a read-only disk, whatever the class's host_dirs
// mode; delete leaves neither disk nor image.
func TestAttachImageVolume(t *testing.T) {
	s, vm, vol := imageVolumeSandbox(t)
	sp := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/image/", Type: "bind", Source: vol, Options: []string{"rbind", "ro"}},
		{Destination: "/sub", Type: "bind", Source: filepath.Join(vol, "bin"), Options: []string{"rbind", "ro"}},
	}}
	if err := checkHostDirs(sp, "refuse"); err != nil {
		t.Fatalf("refuse mode refused an image volume: %v", err)
	}
	if files, err := hostFiles(sp, true); err != nil || len(files) != 0 {
		t.Fatalf("copy mode copied an image volume: %d files, %v", len(files), err)
	}
	vols, err := s.attachDiskVolumes(context.Background(), "c1", sp)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2 || vols[0].Destination != "/image" || vols[1].Destination != "/sub" || vols[0].Fstype != "erofs" ||
		vols[0].Serial != volumeSerial("c1", 0) || len(vm.attached) != 2 || len(vm.writable) != 0 {
		t.Fatalf("volumes %v, attached %v", vols, vm.attached)
	}
	if err := (&api.PrepareContainerRequest{ContainerId: "c1", Spec: []byte("{}"), Rootfs: &api.Rootfs{Source: &api.Rootfs_Block{Block: &api.BlockDevice{Serial: "r1"}}}, DiskVolumes: vols}).Validate(); err != nil {
		t.Fatalf("the guest would refuse what the host sends: %v", err)
	}
	images := vm.attached[vols[0].Serial]
	s.detachDiskVolumes(context.Background(), "c1")
	if len(vm.attached) != 0 {
		t.Fatalf("disks left attached: %v", vm.attached)
	}
	if _, err := os.Stat(images); !os.IsNotExist(err) {
		t.Fatalf("image left behind: %v", err)
	}
}

// A failure part-way (the second disk cannot be attached) leaves nothing:
// the first disk is detached and both images removed. Another pod's image
// volume (a hostile or confused host) is refused naming the mount.
func TestAttachImageVolumeFailures(t *testing.T) {
	s, vm, vol := imageVolumeSandbox(t)
	vm.fail = volumeSerial("c1", 1)
	sp := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/a", Type: "bind", Source: vol, Options: []string{"rbind", "ro"}},
		{Destination: "/b", Type: "bind", Source: vol, Options: []string{"rbind", "ro"}},
	}}
	if _, err := s.attachDiskVolumes(context.Background(), "c1", sp); err == nil || !strings.Contains(err.Error(), "/b") {
		t.Fatalf("err = %v, want the failed attach of /b", err)
	}
	left, _ := os.ReadDir(filepath.Join(s.opts.StateDir, "volumes"))
	if len(vm.attached) != 0 || len(left) != 0 {
		t.Fatalf("left attached %v, images %v", vm.attached, left)
	}

	other := strings.Replace(vol, "/pod1/", "/pod2/", 1)
	os.MkdirAll(other, 0o755)
	sp = &specs.Spec{Mounts: []specs.Mount{{Destination: "/x", Type: "bind", Source: other, Options: []string{"rbind", "ro"}}}}
	if _, err := s.attachDiskVolumes(context.Background(), "c2", sp); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "/x") {
		t.Fatalf("another pod's image volume: err = %v", err)
	}
}
