package spec

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// blockSpec is what containerd's CRI writes for a volumeDevices entry
// (loop0, 7:0, at /dev/xvda) besides a character device of the host.
func blockSpec(t *testing.T, access string) []byte {
	seven, zero, one95 := int64(7), int64(0), int64(195)
	s := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"sh"}, Cwd: "/"},
		Linux: &specs.Linux{
			Devices: []specs.LinuxDevice{{Path: "/dev/nvidia0", Type: "c", Major: 195}, {Path: "/dev/xvda", Type: "b", Major: 7, Minor: 0}},
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
				{Allow: false, Access: "rwm"},
				{Allow: true, Type: "c", Major: &one95, Minor: &zero, Access: "rwm"},
				{Allow: true, Type: "b", Major: &seven, Minor: &zero, Access: access},
			}},
		},
	}
	b, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The block volume's entry and cgroup rule get the guest disk's numbers;
// other host devices are dropped; a read-only disk's rule loses "w".
func TestRewriteBlockDevice(t *testing.T) {
	res, err := Rewrite(blockSpec(t, "rwm"), Options{ContainerID: "c1", BlockDevs: map[string]GuestDevice{"/dev/xvda": {Major: 254, Minor: 16}}})
	if err != nil {
		t.Fatal(err)
	}
	l := res.Spec.Linux
	if len(l.Devices) != 1 || l.Devices[0].Path != "/dev/xvda" || l.Devices[0].Type != "b" || l.Devices[0].Major != 254 || l.Devices[0].Minor != 16 {
		t.Fatalf("devices %+v, want only /dev/xvda as 254:16", l.Devices)
	}
	// The host's 195:0 rule went with its device.
	if n := len(l.Resources.Devices); n != 2 {
		t.Fatalf("cgroup rules %+v, want deny-all and the disk's", l.Resources.Devices)
	}
	r := l.Resources.Devices[1]
	if *r.Major != 254 || *r.Minor != 16 || r.Access != "rwm" {
		t.Fatalf("cgroup rule %+v, want 254:16 rwm", r)
	}

	res, err = Rewrite(blockSpec(t, "rwm"), Options{ContainerID: "c1", BlockDevs: map[string]GuestDevice{"/dev/xvda": {Major: 254, Minor: 16, ReadOnly: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Spec.Linux.Resources.Devices[1]; r.Access != "rm" {
		t.Fatalf("read-only block volume's rule %+v, want access rm", r)
	}
}

// A hostile host names a block volume for a path with no device entry, or
// for a character device: refused, naming the field.
func TestRewriteBlockDeviceRefusals(t *testing.T) {
	for path, want := range map[string]string{"/dev/sdz": "block_volumes", "/dev/nvidia0": "linux.devices[0].type"} {
		_, err := Rewrite(blockSpec(t, "rwm"), Options{ContainerID: "c1", BlockDevs: map[string]GuestDevice{path: {Major: 254}}})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want one naming %s", path, err, want)
		}
	}
}
