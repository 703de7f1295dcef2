package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// kubeletSubPath lays out what the kubelet makes for a subPath of an
// emptyDir: the directory in the volume and its bind mount under
// volume-subpaths (a link to it without root: stat sees the same inode).
func kubeletSubPath(t *testing.T, pod, vol, rel, ctr string, i int) string {
	t.Helper()
	dir := filepath.Join(pod, "volumes", emptyDirKind, vol, rel)
	src := filepath.Join(pod, "volume-subpaths", vol, ctr, fmt.Sprint(i))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if err := os.MkdirAll(filepath.Dir(src), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(dir, src); err != nil {
			t.Fatal(err)
		}
		return src
	}
	if err := os.MkdirAll(src, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, src, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(src, unix.MNT_DETACH) })
	return src
}

// The shim writes a subPath mount of an emptyDir as <emptyDir>/<subPath>,
// found by the inode the kubelet's bind mount shows; other mounts and
// fields stay as containerd wrote them.
func TestEmptyDirSubPaths(t *testing.T) {
	pod := filepath.Join(t.TempDir(), "pods", "uid1")
	vol := filepath.Join(pod, "volumes", emptyDirKind, "shared")
	os.MkdirAll(filepath.Join(vol, "decoy", "app"), 0o750)
	sub := kubeletSubPath(t, pod, "shared", "logs/app", "side", 1)
	cfg := filepath.Join(pod, "volumes", "kubernetes.io~configmap", "cfg")
	os.MkdirAll(cfg, 0o755)
	sp := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/all", Type: "bind", Source: vol, Options: []string{"rbind"}},
		{Destination: "/logs", Type: "bind", Source: sub, Options: []string{"rbind", "ro"}},
		{Destination: "/cfg", Type: "bind", Source: cfg, Options: []string{"rbind"}},
	}}
	raw, _ := json.Marshal(sp)
	var doc map[string]any
	json.Unmarshal(raw, &doc)
	doc["x-unknown"] = "kept"
	raw, _ = json.Marshal(doc)

	out, err := emptyDirSubPaths(raw, sp)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Mounts  []specs.Mount `json:"mounts"`
		Unknown string        `json:"x-unknown"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.Mounts[1].Source != vol+"/logs/app" || got.Mounts[0].Source != vol || got.Mounts[2].Source != cfg || got.Unknown != "kept" {
		t.Errorf("rewritten: %+v (unknown %q)", got.Mounts, got.Unknown)
	}
	if strings.Join(got.Mounts[1].Options, ",") != "rbind,ro" {
		t.Errorf("options %v", got.Mounts[1].Options)
	}
	// Nothing to rewrite: the bytes are containerd's.
	plain := &specs.Spec{Mounts: []specs.Mount{sp.Mounts[0], sp.Mounts[2]}}
	raw2, _ := json.Marshal(plain)
	if out, err := emptyDirSubPaths(raw2, plain); err != nil || string(out) != string(raw2) {
		t.Errorf("unchanged spec: %s %v", out, err)
	}
}

// A bind mount that shows no directory of the volume (the kubelet's
// layout changed, or something else was mounted there) fails the
// container naming the mount, rather than giving it another directory.
func TestEmptyDirSubPathNotFound(t *testing.T) {
	pod := filepath.Join(t.TempDir(), "pods", "uid1")
	vol := filepath.Join(pod, "volumes", emptyDirKind, "shared")
	os.MkdirAll(vol, 0o750)
	src := filepath.Join(pod, "volume-subpaths", "shared", "app", "0")
	os.MkdirAll(src, 0o750) // not bound to anything in the volume
	sp := &specs.Spec{Mounts: []specs.Mount{{Destination: "/data", Type: "bind", Source: src, Options: []string{"rbind"}}}}
	raw, _ := json.Marshal(sp)
	_, err := emptyDirSubPaths(raw, sp)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "mount /data") || !strings.Contains(err.Error(), src) {
		t.Errorf("unbound subPath: %v", err)
	}
	// A volume too large to search is an error too, not a long walk.
	for i := 0; i <= maxSubPathSearch; i++ {
		os.Mkdir(filepath.Join(vol, fmt.Sprint(i)), 0o750)
	}
	if _, _, err := subPathOf(src); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("large volume: %v", err)
	}
}
