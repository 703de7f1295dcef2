package spec

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func imageVolumeSpec(t *testing.T, opts []string) []byte {
	s := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"sh"}, Cwd: "/"},
		Mounts: []specs.Mount{{Destination: "/image", Type: "bind",
			Source: "/var/lib/containerd-state/io.containerd.grpc.v1.cri/image-volumes/p1/abc", Options: opts}},
	}
	b, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A disk volume's mount binds the guest's disk mount, read-only even when
// the host asks for rw.
func TestRewriteDiskDirReadOnly(t *testing.T) {
	for _, opts := range [][]string{{"rbind", "ro"}, {"rbind", "rw"}, {"rbind", "rrw", "nosuid"}, nil} {
		res, err := Rewrite(imageVolumeSpec(t, opts), Options{ContainerID: "c1", DiskDirs: map[string]string{"/image": "/run/b/c1/disks/0"}})
		if err != nil {
			t.Fatal(err)
		}
		m := res.Spec.Mounts[0]
		if m.Source != "/run/b/c1/disks/0" || m.Type != "bind" || !slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "rw") || slices.Contains(m.Options, "rrw") {
			t.Errorf("options %v: mount %+v, want a read-only bind of the disk", opts, m)
		}
		if len(res.VolumeDirs) != 0 {
			t.Errorf("options %v: disk volume also given a guest directory %v", opts, res.VolumeDirs)
		}
	}
}

// A hostile host names a disk volume for a destination the spec does not
// mount: refused, naming the field.
func TestRewriteDiskDirWithoutMount(t *testing.T) {
	_, err := Rewrite(imageVolumeSpec(t, nil), Options{ContainerID: "c1", DiskDirs: map[string]string{"/image": "/d/0", "/etc": "/d/1"}})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "disk_volumes") || !strings.Contains(err.Error(), `"/etc"`) {
		t.Fatalf("err = %v, want disk_volumes naming /etc", err)
	}
}
