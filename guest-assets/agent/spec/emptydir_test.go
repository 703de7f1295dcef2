package spec

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestEmptyDir(t *testing.T) {
	const ed = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/cache"
	for src, want := range map[string][3]string{
		ed + "/":                               {ed, "cache", ""},
		ed + "/a/b":                            {ed, "cache", "a/b"},
		ed + "/./a//b/":                        {ed, "cache", "a/b"},
		ed + "/volumes/" + emptyDirKind + "/x": {ed, "cache", "volumes/" + emptyDirKind + "/x"},
	} {
		dir, name, sub, ok, err := EmptyDirSource(src)
		if !ok || err != nil || [3]string{dir, name, sub} != want {
			t.Errorf("%s: %q %q %q %v %v, want %q", src, dir, name, sub, ok, err, want)
		}
	}
	for _, src := range []string{"/var/lib/kubelet/pods/u/volumes/kubernetes.io~configmap/c", "/srv/kubernetes.io~empty-dir/x", "/",
		"/k/volumes/" + emptyDirKind + "/", "/k/volumes/" + emptyDirKind + "/.."} {
		if _, _, _, ok, err := EmptyDirSource(src); ok || err != nil {
			t.Errorf("%s taken for an emptyDir (%v)", src, err)
		}
	}
	// A host climbing out of the emptyDir is refused, not cleaned into
	// another path.
	for _, src := range []string{ed + "/..", ed + "/a/../../other", ed + "/a/.."} {
		if _, _, _, _, err := EmptyDirSource(src); err == nil {
			t.Errorf("%s accepted", src)
		}
	}
	for v, want := range map[string]int64{"64Mi": 64 << 20, "1G": 1e9, "4096": 4096, "1Ti": 1 << 40} {
		if n, disk, err := EmptyDirSize(map[string]string{EmptyDirSizeAnnotation + "c": v}, "c"); err != nil || n != want || disk {
			t.Errorf("%s: %d %v %v", v, n, disk, err)
		}
		if n, disk, err := EmptyDirSize(map[string]string{EmptyDirSizeAnnotation + "c": v + ",disk"}, "c"); want >= 1<<20 && (err != nil || n != want || !disk) {
			t.Errorf("%s,disk: %d %v %v", v, n, disk, err)
		}
	}
	// Hostile or mistaken values are refused naming the annotation.
	for _, v := range []string{"", "-1", "0", "1.5Gi", "2Ti", "9223372036854775807Ki", "64MiB", " 1Mi", "disk", ",disk", "1Mi,disk,disk", "1Mi, disk", "512Ki,disk", "1Mi,Disk"} {
		if _, _, err := EmptyDirSize(map[string]string{EmptyDirSizeAnnotation + "c": v}, "c"); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v", v, err)
		}
	}
	if n, _, err := EmptyDirSize(nil, "c"); n != 0 || err != nil {
		t.Errorf("no annotation: %d %v", n, err)
	}
	raw := []byte(`{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},
		"annotations":{"emptydir.coco-runtime.io/cache":"8Mi"},
		"mounts":[{"destination":"/cache","type":"bind","source":"/k/pods/u/volumes/kubernetes.io~empty-dir/cache","options":["rbind"]},
		{"destination":"/data","type":"bind","source":"/srv/data","options":["rbind"]}]}`)
	res, err := Rewrite(raw, Options{ContainerID: "c", VolumeRoot: "/run/vol"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.VolumeDirs) != 2 || len(res.EmptyDirs) != 1 || res.EmptyDirs[res.Spec.Mounts[0].Source] != 8<<20 || res.DiskEmptyDirs != nil {
		t.Fatalf("dirs %v emptyDirs %v disks %v", res.VolumeDirs, res.EmptyDirs, res.DiskEmptyDirs)
	}
	// ",disk": the same guest directory, on the disk whose serial the
	// host derives from the emptyDir's path.
	res, err = Rewrite([]byte(strings.Replace(string(raw), `"8Mi"`, `"8Mi,disk"`, 1)), Options{ContainerID: "c", VolumeRoot: "/run/vol"})
	if err != nil {
		t.Fatal(err)
	}
	dir := res.Spec.Mounts[0].Source
	serial := EmptyDirSerial("/k/pods/u/volumes/kubernetes.io~empty-dir/cache")
	if res.EmptyDirs[dir] != 8<<20 || res.DiskEmptyDirs[dir] != serial || len(serial) != 20 {
		t.Fatalf("emptyDirs %v disks %v, want serial %s", res.EmptyDirs, res.DiskEmptyDirs, serial)
	}
}

// TestEmptyDirSubPath: a subPath of an emptyDir (the shim's form
// <emptyDir>/<sub>) shares the emptyDir's guest directory with a mount of
// the whole volume, and becomes a bind of a per-container target the
// agent fills; a source that climbs out is refused naming the mount.
func TestEmptyDirSubPath(t *testing.T) {
	const ed = "/k/pods/u/volumes/kubernetes.io~empty-dir/shared"
	raw := []byte(`{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},
		"mounts":[{"destination":"/all","type":"bind","source":"` + ed + `","options":["rbind"]},
		{"destination":"/sub","type":"bind","source":"` + ed + `/logs/app","options":["rbind","ro"]}]}`)
	res, err := Rewrite(raw, Options{ContainerID: "c1", VolumeRoot: "/run/vol"})
	if err != nil {
		t.Fatal(err)
	}
	dir := res.Spec.Mounts[0].Source
	want := SubPath{Dir: dir, Rel: "logs/app", Target: "/run/vol/subpaths/c1/1"}
	if len(res.SubPaths) != 1 || res.SubPaths[0] != want {
		t.Fatalf("subPaths %+v, want %+v", res.SubPaths, want)
	}
	if m := res.Spec.Mounts[1]; m.Source != want.Target || m.Type != "bind" || !slices.Contains(m.Options, "ro") {
		t.Errorf("subPath mount %+v", m)
	}
	if len(res.VolumeDirs) != 1 || res.VolumeDirs[0] != dir || len(res.EmptyDirs) != 1 {
		t.Errorf("dirs %v emptyDirs %v", res.VolumeDirs, res.EmptyDirs)
	}
	bad := []byte(strings.Replace(string(raw), ed+"/logs/app", ed+"/../../../../etc", 1))
	if _, err := Rewrite(bad, Options{ContainerID: "c1", VolumeRoot: "/run/vol"}); !errdefs.IsInvalidArgument(err) || !strings.Contains(fmt.Sprint(err), "mounts[1].source") {
		t.Errorf("climbing source: %v", err)
	}
}
