package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// secretVolume lays out a directory the way the kubelet's atomic writer
// does: the data in a timestamped directory, ..data linking to it, and the
// visible names linking through ..data.
func secretVolume(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pods", "uid", "volumes", "kubernetes.io~secret", "creds")
	ts := filepath.Join(dir, "..2026_12_06_22_00_00.123")
	for name, content := range files {
		p := filepath.Join(ts, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		top := strings.SplitN(name, "/", 2)[0]
		os.Symlink(filepath.Join("..data", top), filepath.Join(dir, top))
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFileVolumeCopied(t *testing.T) {
	src := secretVolume(t, map[string]string{"password": "sealed.a.b.c", "nested/ca.crt": "PEM"})
	sp := &specs.Spec{Mounts: []specs.Mount{{Destination: "/etc/creds", Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}}
	files, err := hostFiles(sp, false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range files {
		got[f.Destination] = string(f.Content)
		if f.Destination == "/etc/creds/password" && f.Mode != 0o640 {
			t.Errorf("mode %o", f.Mode)
		}
	}
	if len(got) != 2 || got["/etc/creds/password"] != "sealed.a.b.c" || got["/etc/creds/nested/ca.crt"] != "PEM" {
		t.Fatalf("files %v", got)
	}
}

// A volume whose links lead outside it is not followed out: the shim reads
// only what lies under the volume directory.
func TestFileVolumeLinksStayInside(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "host-secret")
	os.WriteFile(outside, []byte("host only"), 0o600)
	src := secretVolume(t, map[string]string{"key": "v"})
	ts, _ := filepath.Glob(filepath.Join(src, "..2026*"))
	os.Symlink(outside, filepath.Join(ts[0], "escape"))
	budget := maxHostFiles
	files, err := readFileVolume(src, "/v", &budget)
	if err != nil || len(files) != 1 || files[0].Destination != "/v/key" {
		t.Fatalf("files %v, err %v: want /v/key alone", files, err)
	}

	// ..data itself pointing outside is refused.
	evil := filepath.Join(t.TempDir(), "pods", "u", "volumes", "kubernetes.io~configmap", "c")
	os.MkdirAll(evil, 0o755)
	os.Symlink(filepath.Dir(outside), filepath.Join(evil, "..data"))
	budget = maxHostFiles
	files, err = readFileVolume(evil, "/v", &budget)
	if err == nil {
		t.Fatalf("..data outside the volume was followed: %d files", len(files))
	}
}

func TestFileVolumeLimits(t *testing.T) {
	src := secretVolume(t, map[string]string{"big": strings.Repeat("x", 100)})
	budget := 10
	if _, err := readFileVolume(src, "/v", &budget); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "exceed") {
		t.Fatalf("over budget: %v", err)
	}
	if isFileVolume("/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/scratch") || !isFileVolume("/var/lib/kubelet/pods/u/volumes/kubernetes.io~projected/kube-api-access-x") {
		t.Fatal("isFileVolume")
	}
}
