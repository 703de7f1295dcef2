package container

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

const volumeSpec = `{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},
	"mounts":[{"destination":"/etc/cfg","type":"bind","source":"/var/lib/kubelet/pods/u/volumes/kubernetes.io~configmap/cfg","options":["rbind","ro"]},
	{"destination":"/dev/termination-log","type":"bind","source":"/var/lib/kubelet/pods/u/containers/app/abc","options":["rbind"]},
	{"destination":"/etc/token","type":"bind","source":"/var/lib/kubelet/pods/u/volume-subpaths/s/app/0","options":["rbind","ro"]}]}`

func prepareVolume(t *testing.T, unseal func(context.Context, string) ([]byte, error)) (*Manager, string) {
	t.Helper()
	m := NewManager(Config{BundleRoot: t.TempDir(), CgroupParent: "/coco", Unseal: unseal})
	bundle, err := m.Prepare(context.Background(), &api.PrepareContainerRequest{ContainerId: "c1", Spec: []byte(volumeSpec), Files: []*api.File{
		{Destination: "/etc/cfg/a", Content: []byte("one")},
		{Destination: "/etc/cfg/sub/b", Content: []byte("two")},
		{Destination: "/dev/termination-log"},
		{Destination: "/etc/token", Content: []byte("secret-token")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return m, filepath.Join(bundle, "files", "etc", "cfg")
}

func readVol(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// The guest copy of a file volume has the kubelet's atomic writer layout
// from the start, and an update flips ..data to a complete new version:
// new and changed keys appear, removed ones go, the old version is gone.
func TestUpdateVolumeAtomicLayout(t *testing.T) {
	m, dir := prepareVolume(t, nil)
	first, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil || !strings.HasPrefix(first, "..") {
		t.Fatalf("..data: %q %v", first, err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "a")); l != "..data/a" {
		t.Errorf("a links to %q, want ..data/a", l)
	}
	if readVol(t, dir, "a") != "one" || readVol(t, dir, "sub/b") != "two" {
		t.Fatalf("content a=%q sub/b=%q", readVol(t, dir, "a"), readVol(t, dir, "sub/b"))
	}
	r := &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{
		{Destination: "/etc/cfg/a", Content: []byte("uno")},
		{Destination: "/etc/cfg/c", Content: []byte("tres"), Mode: 0o600},
	}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := m.UpdateVolume(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	second, _ := os.Readlink(filepath.Join(dir, "..data"))
	if second == first {
		t.Fatalf("..data still %q", second)
	}
	if readVol(t, dir, "a") != "uno" || readVol(t, dir, "c") != "tres" {
		t.Errorf("after update a=%q c=%q", readVol(t, dir, "a"), readVol(t, dir, "c"))
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("removed key sub still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("old version %s left: %v", first, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "c")); st == nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode of c: %v", st)
	}
}

// Sealed secrets in an update are unsealed before ..data flips; one that
// cannot be unsealed leaves the current version in place.
func TestUpdateVolumeUnseals(t *testing.T) {
	fail := false
	unseal := func(_ context.Context, s string) ([]byte, error) {
		if fail {
			return nil, errdefs.ErrPermissionDenied
		}
		return []byte("plain"), nil
	}
	m, dir := prepareVolume(t, unseal)
	r := &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{{Destination: "/etc/cfg/a", Content: []byte("sealed.h.p.s")}}}
	if err := m.UpdateVolume(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if got := readVol(t, dir, "a"); got != "plain" {
		t.Fatalf("a = %q", got)
	}
	fail = true
	before, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := m.UpdateVolume(context.Background(), r); err == nil {
		t.Fatal("an update that cannot be unsealed was applied")
	}
	if after, _ := os.Readlink(filepath.Join(dir, "..data")); after != before || readVol(t, dir, "a") != "plain" {
		t.Errorf("failed update changed the volume: %q→%q", before, after)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 { // ..data, one version, a
		t.Errorf("left behind: %v", entries)
	}
}

// Hostile host: updates for another container, a destination that is no
// file volume (a single file, the termination log, an arbitrary path),
// files outside the volume or named like the writer's own, oversize.
func TestUpdateVolumeHostile(t *testing.T) {
	m, dir := prepareVolume(t, nil)
	big := bytes.Repeat([]byte("x"), api.MaxFileBytes+1)
	cases := []struct {
		name string
		r    *api.UpdateVolumeRequest
		want func(error) bool
	}{
		{"unknown container", &api.UpdateVolumeRequest{ContainerId: "nope", Destination: "/etc/cfg"}, errdefs.IsNotFound},
		{"single file", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/token"}, errdefs.IsNotFound},
		{"termination log", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/dev/termination-log"}, errdefs.IsNotFound},
		{"not mounted", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc"}, errdefs.IsNotFound},
		{"outside", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{{Destination: "/etc/passwd"}}}, errdefs.IsInvalidArgument},
		{"dotdot name", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{{Destination: "/etc/cfg/..data"}}}, errdefs.IsInvalidArgument},
		{"dotdot nested", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{{Destination: "/etc/cfg/x/..2020"}}}, errdefs.IsInvalidArgument},
		{"unclean", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{{Destination: "/etc/cfg/../../x"}}}, errdefs.IsInvalidArgument},
		{"file under file", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{{Destination: "/etc/cfg/a"}, {Destination: "/etc/cfg/a/b"}}}, errdefs.IsInvalidArgument},
		{"oversize", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{{Destination: "/etc/cfg/a", Content: big}}}, errdefs.IsInvalidArgument},
		{"bad mode", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{{Destination: "/etc/cfg/a", Mode: 0o4755}}}, errdefs.IsInvalidArgument},
		{"root", &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/"}, errdefs.IsInvalidArgument},
	}
	before, _ := os.Readlink(filepath.Join(dir, "..data"))
	for _, c := range cases {
		err := c.r.Validate()
		if err == nil {
			err = m.UpdateVolume(context.Background(), c.r)
		}
		if !c.want(err) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if after, _ := os.Readlink(filepath.Join(dir, "..data")); after != before || readVol(t, dir, "a") != "one" {
		t.Errorf("refused updates changed the volume")
	}
}

// A link the container planted in a writable volume does not lead the
// agent's writes outside it.
func TestUpdateVolumePlantedLink(t *testing.T) {
	m, dir := prepareVolume(t, nil)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "evil")); err != nil {
		t.Fatal(err)
	}
	r := &api.UpdateVolumeRequest{ContainerId: "c1", Destination: "/etc/cfg", Files: []*api.File{{Destination: "/etc/cfg/evil/x", Content: []byte("x")}}}
	_ = m.UpdateVolume(context.Background(), r)
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("wrote outside the volume: %v", entries)
	}
}

// Only a file the host sent empty can be read back, bounded; never a
// file with content (a secret) or a volume's file.
func TestReadTerminationMessage(t *testing.T) {
	m, _ := prepareVolume(t, nil)
	b, err := m.ReadTerminationMessage("c1", "/dev/termination-log")
	if err != nil || len(b) != 0 {
		t.Fatalf("empty log: %q %v", b, err)
	}
	m.mu.Lock()
	file := m.containers["c1"].emptyFiles["/dev/termination-log"]
	m.mu.Unlock()
	if err := os.WriteFile(file, bytes.Repeat([]byte("m"), 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err = m.ReadTerminationMessage("c1", "/dev/termination-log"); err != nil || len(b) != api.MaxTerminationMessage {
		t.Fatalf("long log: %d bytes, %v", len(b), err)
	}
	for _, dest := range []string{"/etc/token", "/etc/cfg/a", "/etc/cfg", "/etc/passwd"} {
		if _, err := m.ReadTerminationMessage("c1", dest); !errdefs.IsPermissionDenied(err) {
			t.Errorf("%s: %v", dest, err)
		}
	}
	if _, err := m.ReadTerminationMessage("other", "/dev/termination-log"); !errdefs.IsNotFound(err) {
		t.Errorf("unknown container: %v", err)
	}
	// A link swapped in for the file is not followed.
	os.Remove(file)
	os.Symlink("/etc/passwd", file)
	if _, err := m.ReadTerminationMessage("c1", "/dev/termination-log"); err == nil {
		t.Error("followed a link")
	}
}

// Each emptyDir is its own tmpfs, capped by its annotation: writing past
// it is ENOSPC, and another container of the pod shares the same mount.
func TestEmptyDirTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs")
	}
	vols := t.TempDir()
	m := NewManager(Config{BundleRoot: t.TempDir(), CgroupParent: "/coco", VolumeRoot: vols})
	spec := []byte(`{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},
		"annotations":{"emptydir.coco-runtime.io/cache":"1Mi"},
		"mounts":[{"destination":"/cache","type":"bind","source":"/k/pods/u/volumes/kubernetes.io~empty-dir/cache","options":["rbind"]}]}`)
	var dir string
	for _, id := range []string{"c1", "c2"} {
		if _, err := m.Prepare(context.Background(), &api.PrepareContainerRequest{ContainerId: id, Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	for d := range m.emptyDirs {
		dir = d
	}
	if len(m.emptyDirs) != 1 {
		t.Fatalf("emptyDir mounts %v", m.emptyDirs)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	err := os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte("x"), 2<<20), 0o644)
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing 2 MiB into a 1 MiB emptyDir: %v", err)
	}
}
