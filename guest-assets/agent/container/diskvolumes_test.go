package container

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

const diskVolSpec = `{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},
	"mounts":[{"destination":"/image","type":"bind","source":"/state/image-volumes/p1/abc","options":["rbind","rw"]}]}`

// A disk volume whose disk never appears fails Prepare naming the field,
// and a serial of another form (a hostile host naming the rootfs or tools
// disk, past the gate) is refused before any device is looked up; neither
// leaves a bundle.
func TestDiskVolumeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, serial string
		is           func(error) bool
	}{
		{"absent disk", "v0123456789abcdef012", errdefs.IsNotFound},
		{"rootfs serial", "r0123456789abcdef012", errdefs.IsInvalidArgument},
		{"tools serial", api.ToolsDiskSerial, errdefs.IsInvalidArgument},
	} {
		root := t.TempDir()
		m := NewManager(Config{BundleRoot: root, SysBlock: t.TempDir(), DeviceWait: 50 * time.Millisecond})
		_, err := m.Prepare(context.Background(), &api.PrepareContainerRequest{ContainerId: "c1", Spec: []byte(diskVolSpec),
			DiskVolumes: []*api.DiskVolume{{Serial: tc.serial, Destination: "/image", Fstype: "erofs"}}})
		if !tc.is(err) || !strings.Contains(err.Error(), "disk_volumes[0]") {
			t.Errorf("%s: err = %v, want an error naming disk_volumes[0]", tc.name, err)
		}
		if left, _ := os.ReadDir(root); len(left) != 0 || m.Prepared("c1") {
			t.Errorf("%s: bundle left behind: %v", tc.name, left)
		}
	}
}

// A real EROFS image on a loop device, found by serial: Prepare mounts it
// read-only and binds it read-only at the destination although the host
// said rw; Remove unmounts it.
func TestDiskVolumeMountsReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches a loop device and mounts EROFS (what it checks: the guest mounts a volume disk read-only)")
	}
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Skip("mkfs.erofs missing: install erofs-utils")
	}
	src, tmp := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(src, "hello"), []byte("hi\n"), 0o644)
	image := filepath.Join(tmp, "v.erofs")
	if out, err := exec.Command("mkfs.erofs", "--quiet", image, src).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v: %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", image).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	sys := t.TempDir()
	serial := "v0123456789abcdef012"
	os.MkdirAll(filepath.Join(sys, filepath.Base(dev)), 0o755)
	os.WriteFile(filepath.Join(sys, filepath.Base(dev), "serial"), []byte(serial+"\n"), 0o644)
	os.WriteFile(filepath.Join(sys, filepath.Base(dev), "size"), []byte("8\n"), 0o644)

	m := NewManager(Config{BundleRoot: t.TempDir(), SysBlock: sys, DevDir: filepath.Dir(dev), DeviceWait: 5 * time.Second})
	bundle, err := m.Prepare(context.Background(), &api.PrepareContainerRequest{ContainerId: "c1", Spec: []byte(diskVolSpec),
		DiskVolumes: []*api.DiskVolume{{Serial: serial, Destination: "/image", Fstype: "erofs"}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	mnt := s.Mounts[0]
	if !slices.Contains(mnt.Options, "ro") || slices.Contains(mnt.Options, "rw") || !strings.HasPrefix(mnt.Source, bundle) {
		t.Fatalf("mount %+v: want a read-only bind of a guest directory in the bundle", mnt)
	}
	if got, err := os.ReadFile(filepath.Join(mnt.Source, "hello")); err != nil || string(got) != "hi\n" {
		t.Fatalf("volume content %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(mnt.Source, "new"), nil, 0o644); err == nil {
		t.Fatal("wrote into the volume disk's mount")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt.Source, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Fatalf("volume mount flags %#x (%v): want read-only", st.Flags, err)
	}
	if err := m.Remove(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Fatalf("bundle left after Remove: %v", err)
	}
}

const blockVolSpec = `{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},
	"linux":{"devices":[{"path":"/dev/xvda","type":"b","major":7,"minor":0}],
	"resources":{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"b","major":7,"minor":0,"access":"rwm"}]}}}`

// A block volume's disk, found by serial, gives the container's device
// entry its numbers; one that never appears fails naming the field.
func TestBlockVolume(t *testing.T) {
	serial := "b0123456789abcdef012"
	sys := t.TempDir()
	// /dev/null stands in for the disk: its numbers are known (1:3), but
	// it is no block device, which the guest refuses.
	os.MkdirAll(filepath.Join(sys, "null"), 0o755)
	os.WriteFile(filepath.Join(sys, "null", "serial"), []byte(serial+"\n"), 0o644)
	os.WriteFile(filepath.Join(sys, "null", "size"), []byte("8\n"), 0o644)
	req := func() *api.PrepareContainerRequest {
		return &api.PrepareContainerRequest{ContainerId: "c1", Spec: []byte(blockVolSpec),
			BlockVolumes: []*api.BlockVolume{{Serial: serial, Path: "/dev/xvda"}}}
	}
	m := NewManager(Config{BundleRoot: t.TempDir(), SysBlock: sys, DevDir: "/dev", DeviceWait: time.Second})
	if _, err := m.Prepare(context.Background(), req()); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not a block device") {
		t.Fatalf("a disk that is no block device: %v", err)
	}
	m = NewManager(Config{BundleRoot: t.TempDir(), SysBlock: t.TempDir(), DeviceWait: 50 * time.Millisecond})
	if _, err := m.Prepare(context.Background(), req()); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "block_volumes[0].serial") {
		t.Fatalf("absent disk: %v", err)
	}

	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches a loop device (what it checks: the container's device entry gets the disk's numbers)")
	}
	img := filepath.Join(t.TempDir(), "disk")
	os.WriteFile(img, make([]byte, 1<<20), 0o600)
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	sys = t.TempDir()
	os.MkdirAll(filepath.Join(sys, filepath.Base(dev)), 0o755)
	os.WriteFile(filepath.Join(sys, filepath.Base(dev), "serial"), []byte(serial+"\n"), 0o644)
	os.WriteFile(filepath.Join(sys, filepath.Base(dev), "size"), []byte("2048\n"), 0o644)
	m = NewManager(Config{BundleRoot: t.TempDir(), SysBlock: sys, DevDir: filepath.Dir(dev), DeviceWait: 5 * time.Second})
	bundle, err := m.Prepare(context.Background(), req())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	d, r := s.Linux.Devices, s.Linux.Resources.Devices[1]
	major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	if len(d) != 1 || d[0].Major != major || d[0].Minor != minor || *r.Major != major || *r.Minor != minor {
		t.Fatalf("devices %+v, rule %+v; want %d:%d", d, r, major, minor)
	}
}
