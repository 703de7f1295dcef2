package spec

import (
	"testing"

	"github.com/containerd/errdefs"
)

func TestEmptyDir(t *testing.T) {
	if n, ok := EmptyDirName("/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/cache/"); !ok || n != "cache" {
		t.Errorf("name %q %v", n, ok)
	}
	for _, src := range []string{"/var/lib/kubelet/pods/u/volumes/kubernetes.io~configmap/c", "/srv/kubernetes.io~empty-dir/x", "/"} {
		if _, ok := EmptyDirName(src); ok {
			t.Errorf("%s taken for an emptyDir", src)
		}
	}
	for v, want := range map[string]int64{"64Mi": 64 << 20, "1G": 1e9, "4096": 4096, "1Ti": 1 << 40} {
		if n, err := EmptyDirSize(map[string]string{EmptyDirSizeAnnotation + "c": v}, "c"); err != nil || n != want {
			t.Errorf("%s: %d %v", v, n, err)
		}
	}
	// Hostile or mistaken values are refused naming the annotation.
	for _, v := range []string{"", "-1", "0", "1.5Gi", "2Ti", "9223372036854775807Ki", "64MiB", " 1Mi"} {
		if _, err := EmptyDirSize(map[string]string{EmptyDirSizeAnnotation + "c": v}, "c"); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v", v, err)
		}
	}
	if n, err := EmptyDirSize(nil, "c"); n != 0 || err != nil {
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
	if len(res.VolumeDirs) != 2 || len(res.EmptyDirs) != 1 || res.EmptyDirs[res.Spec.Mounts[0].Source] != 8<<20 {
		t.Fatalf("dirs %v emptyDirs %v", res.VolumeDirs, res.EmptyDirs)
	}
}
