package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// The host device is found by number through sysfs and must be that block
// device: a DEVNAME naming another node, a path climbing out of /dev or
// numbers the host does not have are refused.
func TestHostBlockDevice(t *testing.T) {
	sys := t.TempDir()
	old := sysDevBlock
	sysDevBlock = sys
	defer func() { sysDevBlock = old }()
	for nums, devname := range map[string]string{"1:3": "null", "1:5": "../etc/passwd"} {
		os.MkdirAll(filepath.Join(sys, nums), 0o755)
		os.WriteFile(filepath.Join(sys, nums, "uevent"), []byte("MAJOR=1\nDEVNAME="+devname+"\nDEVTYPE=disk\n"), 0o644)
	}
	for _, n := range [][2]int64{{1, 3}, {1, 5}, {250, 9}} {
		if node, err := hostBlockDevice(n[0], n[1]); !errdefs.IsNotFound(err) {
			t.Errorf("%d:%d: %q, %v; want NotFound", n[0], n[1], node, err)
		}
	}
}

func TestDeviceWritable(t *testing.T) {
	seven, zero, one := int64(7), int64(0), int64(1)
	d := specs.LinuxDevice{Path: "/dev/xvda", Type: "b", Major: 7, Minor: 0}
	for _, c := range []struct {
		rules []specs.LinuxDeviceCgroup
		want  bool
	}{
		{nil, false},
		{[]specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "b", Major: &seven, Minor: &zero, Access: "rwm"}}, true},
		{[]specs.LinuxDeviceCgroup{{Allow: true, Type: "b", Major: &seven, Minor: &zero, Access: "r"}}, false},
		{[]specs.LinuxDeviceCgroup{{Allow: true, Type: "b", Major: &seven, Minor: &one, Access: "rw"}}, false},
		{[]specs.LinuxDeviceCgroup{{Allow: true, Type: "a", Access: "rwm"}}, true}, // privileged
	} {
		if got := deviceWritable(&specs.LinuxResources{Devices: c.rules}, d); got != c.want {
			t.Errorf("rules %+v: writable %v, want %v", c.rules, got, c.want)
		}
	}
}

// A block entry of linux.devices becomes a hot-plugged disk of the host
// device, writable as its cgroup rule says; delete detaches it and leaves
// the host device alone.
func TestAttachBlockVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches a loop device (what it checks: a volumeDevices entry is hot-plugged as the host device)")
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
	major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	vm := &hotplugRecorder{attached: map[string]string{}}
	s := &vmSandbox{vm: vm, opts: Options{ID: "pod1", StateDir: t.TempDir(), Config: &configs.Config{}}}
	sp := &specs.Spec{Linux: &specs.Linux{
		Devices: []specs.LinuxDevice{{Path: "/dev/nvidia0", Type: "c", Major: 195}, {Path: "/dev/xvda/", Type: "b", Major: major, Minor: minor}},
		Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
			{Allow: false, Access: "rwm"}, {Allow: true, Type: "b", Major: &major, Minor: &minor, Access: "rwm"}}},
	}}
	vols, err := s.attachBlockVolumes(context.Background(), "c1", sp)
	if err != nil {
		t.Fatal(err)
	}
	serial := blockSerial("c1", 0)
	if len(vols) != 1 || vols[0].Serial != serial || vols[0].Path != "/dev/xvda" || vols[0].ReadOnly || vm.attached[serial] != dev || !vm.writable[serial] {
		t.Fatalf("volumes %v, attached %v writable %v", vols, vm.attached, vm.writable)
	}
	if !api.IsBlockVolumeSerial(serial) {
		t.Fatalf("serial %q is not of the block volume form", serial)
	}
	s.detachDiskVolumes(context.Background(), "c1")
	if len(vm.attached) != 0 {
		t.Fatalf("left attached: %v", vm.attached)
	}

	// A privileged container lists every host device with an allow-all
	// rule: none is attached.
	sp.Linux.Resources.Devices = append(sp.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "a", Access: "rwm"})
	if vols, err := s.attachBlockVolumes(context.Background(), "c2", sp); err != nil || len(vols) != 0 || len(vm.attached) != 0 {
		t.Fatalf("privileged container: volumes %v, attached %v, %v", vols, vm.attached, err)
	}
	if _, err := os.Stat(dev); err != nil {
		t.Fatalf("host device gone: %v", err)
	}
}
