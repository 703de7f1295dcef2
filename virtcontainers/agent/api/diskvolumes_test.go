package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// A hostile host's disk_volumes: each refused naming the field.
func TestValidateDiskVolumes(t *testing.T) {
	ok := func() *DiskVolume {
		return &DiskVolume{Serial: "v0123456789abcdef012", Destination: "/data", Fstype: "erofs"}
	}
	block := &Rootfs{Source: &Rootfs_Block{Block: &BlockDevice{Serial: "r1", Fstype: "erofs"}}}
	many := make([]*DiskVolume, MaxDiskVolumes+1)
	for i := range many {
		many[i] = &DiskVolume{Serial: fmt.Sprintf("v%019x", i), Destination: fmt.Sprintf("/d%d", i), Fstype: "erofs"}
	}
	with := func(f func(v *DiskVolume)) []*DiskVolume { v := ok(); f(v); return []*DiskVolume{v} }
	for _, tc := range []struct {
		name string
		vols []*DiskVolume
		want string // "" = accepted
	}{
		{"ok", []*DiskVolume{ok()}, ""},
		{"too many", many, "disk_volumes:"},
		{"rootfs serial", with(func(v *DiskVolume) { v.Serial = "r0123456789abcdef012" }), "disk_volumes[0].serial"},
		{"tools disk", with(func(v *DiskVolume) { v.Serial = ToolsDiskSerial }), "disk_volumes[0].serial"},
		{"scratch disk", with(func(v *DiskVolume) { v.Serial = ScratchDiskSerial }), "disk_volumes[0].serial"},
		{"upper-case serial", with(func(v *DiskVolume) { v.Serial = "v0123456789ABCDEF012" }), "disk_volumes[0].serial"},
		{"long serial", with(func(v *DiskVolume) { v.Serial += "0" }), "disk_volumes[0].serial"},
		{"relative destination", with(func(v *DiskVolume) { v.Destination = "data" }), "disk_volumes[0].destination"},
		{"dotdot destination", with(func(v *DiskVolume) { v.Destination = "/data/../etc" }), "disk_volumes[0].destination"},
		{"root destination", with(func(v *DiskVolume) { v.Destination = "/" }), "disk_volumes[0].destination"},
		{"nul destination", with(func(v *DiskVolume) { v.Destination = "/da\x00ta" }), "disk_volumes[0].destination"},
		{"ext4", with(func(v *DiskVolume) { v.Fstype = "ext4" }), "disk_volumes[0].fstype"},
		{"no fstype", with(func(v *DiskVolume) { v.Fstype = "" }), "disk_volumes[0].fstype"},
		{"serial twice", []*DiskVolume{ok(), {Serial: ok().Serial, Destination: "/other", Fstype: "erofs"}}, "disk_volumes[1].serial"},
		{"destination twice", []*DiskVolume{ok(), {Serial: "v0123456789abcdef013", Destination: "/data", Fstype: "erofs"}}, "disk_volumes[1].destination"},
	} {
		r := &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}"), Rootfs: block, DiskVolumes: tc.vols}
		err := r.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Errorf("%s: got %v, want an invalid-argument error naming %s", tc.name, err, tc.want)
		}
	}
}

// A hostile host's block_volumes: each refused naming the field.
func TestValidateBlockVolumes(t *testing.T) {
	ok := func() *BlockVolume { return &BlockVolume{Serial: "b0123456789abcdef012", Path: "/dev/xvda"} }
	block := &Rootfs{Source: &Rootfs_Block{Block: &BlockDevice{Serial: "r1", Fstype: "erofs"}}}
	many := make([]*BlockVolume, MaxDiskVolumes+1)
	for i := range many {
		many[i] = &BlockVolume{Serial: fmt.Sprintf("b%019x", i), Path: fmt.Sprintf("/dev/d%d", i)}
	}
	with := func(f func(v *BlockVolume)) []*BlockVolume {
		v := ok()
		f(v)
		return []*BlockVolume{v}
	}
	for _, tc := range []struct {
		name string
		vols []*BlockVolume
		want string // "" = accepted
	}{
		{"ok", []*BlockVolume{ok()}, ""},
		{"too many", many, "block_volumes:"},
		{"volume disk serial", with(func(v *BlockVolume) { v.Serial = "v0123456789abcdef012" }), "block_volumes[0].serial"},
		{"rootfs serial", with(func(v *BlockVolume) { v.Serial = "r0123456789abcdef012" }), "block_volumes[0].serial"},
		{"scratch disk", with(func(v *BlockVolume) { v.Serial = ScratchDiskSerial }), "block_volumes[0].serial"},
		{"relative path", with(func(v *BlockVolume) { v.Path = "dev/xvda" }), "block_volumes[0].path"},
		{"dotdot path", with(func(v *BlockVolume) { v.Path = "/dev/../etc/passwd" }), "block_volumes[0].path"},
		{"root path", with(func(v *BlockVolume) { v.Path = "/" }), "block_volumes[0].path"},
		{"serial twice", []*BlockVolume{ok(), {Serial: ok().Serial, Path: "/dev/other"}}, "block_volumes[1].serial"},
		{"path twice", []*BlockVolume{ok(), {Serial: "b0123456789abcdef013", Path: "/dev/xvda"}}, "block_volumes[1].path"},
	} {
		r := &PrepareContainerRequest{ContainerId: "c", Spec: []byte("{}"), Rootfs: block, BlockVolumes: tc.vols}
		err := r.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Errorf("%s: got %v, want an invalid-argument error naming %s", tc.name, err, tc.want)
		}
	}
}
