package sandbox

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// writeAtomic writes files as the kubelet's atomic writer does: a new
// ..<ts> directory, ..data flipped to it by rename, top-level links.
func writeAtomic(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	ts, err := os.MkdirTemp(dir, "..ts_")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name))
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func TestVolumeSyncSendsFlip(t *testing.T) {
	old := volumeSyncInterval
	volumeSyncInterval = 20 * time.Millisecond
	defer func() { volumeSyncInterval = old }()
	pod := t.TempDir()
	src := filepath.Join(pod, "pods", "u", "volumes", "kubernetes.io~configmap", "cfg")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, src, map[string]string{"k": "v1"})
	sp := &specs.Spec{Mounts: []specs.Mount{{Destination: "/etc/cfg", Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}}
	got := make(chan *api.UpdateVolumeRequest, 4)
	var v volumeSync
	v.watch(context.Background(), "c1", sp, func(_ context.Context, r *api.UpdateVolumeRequest) error {
		got <- r
		return nil
	})
	defer v.stopAll()
	select {
	case r := <-got:
		t.Fatalf("update without a flip: %v", r)
	case <-time.After(100 * time.Millisecond):
	}
	writeAtomic(t, src, map[string]string{"k": "v2", "n": "new"})
	select {
	case r := <-got:
		if r.GetContainerId() != "c1" || r.GetDestination() != "/etc/cfg" || len(r.GetFiles()) != 2 {
			t.Fatalf("update %v", r)
		}
		for _, f := range r.GetFiles() {
			if f.GetDestination() == "/etc/cfg/k" && string(f.GetContent()) != "v2" {
				t.Errorf("k = %q", f.GetContent())
			}
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no update after the flip")
	}
	v.forget("c1")
	writeAtomic(t, src, map[string]string{"k": "v3"})
	select {
	case r := <-got:
		t.Fatalf("update after the container was deleted: %v", r)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestTerminationLog(t *testing.T) {
	root := t.TempDir()
	host := filepath.Join(root, "pods", "u", "containers", "app", "abc123")
	os.MkdirAll(filepath.Dir(host), 0o755)
	os.WriteFile(host, nil, 0o644)
	if !isTerminationLog(host) || isTerminationLog(filepath.Join(root, "etc", "hosts")) {
		t.Fatal("isTerminationLog")
	}
	sp := &specs.Spec{Mounts: []specs.Mount{{Destination: "/dev/termination-log", Type: "bind", Source: host}}}
	var v volumeSync
	v.watch(context.Background(), "c1", sp, nil)
	if id, ok := isInitExit(&eventstypes.TaskExit{ContainerID: "c1", ID: "c1"}); !ok || id != "c1" {
		t.Fatal("init exit not recognised")
	}
	if _, ok := isInitExit(&eventstypes.TaskExit{ContainerID: "c1", ID: "exec1"}); ok {
		t.Fatal("an exec's exit taken for the container's")
	}
	// A hostile guest's oversize answer is cut to the kubelet's bound.
	v.exited(context.Background(), "c1", func(_ context.Context, r *api.ReadTerminationMessageRequest) (*api.ReadTerminationMessageResponse, error) {
		if r.GetDestination() != "/dev/termination-log" {
			t.Errorf("asked for %q", r.GetDestination())
		}
		return &api.ReadTerminationMessageResponse{Content: bytes.Repeat([]byte("x"), 100000)}, nil
	})
	if b, _ := os.ReadFile(host); len(b) != api.MaxTerminationMessage {
		t.Errorf("host file has %d bytes", len(b))
	}
	// A link in the host file's place is not followed.
	other := filepath.Join(root, "other")
	os.WriteFile(other, []byte("keep"), 0o644)
	os.Remove(host)
	os.Symlink(other, host)
	if err := writeTerminationLog(host, []byte("bye")); err == nil {
		t.Error("followed a link")
	}
	if b, _ := os.ReadFile(other); string(b) != "keep" {
		t.Errorf("link target written: %q", b)
	}
}

// A TEE class refuses a hostPath or PV directory naming the mount; file
// volumes, emptyDirs (and their subPaths), /dev/shm and files pass, and
// "empty" keeps the old behaviour.
func TestCheckHostDirs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "pods", "u")
	dirs := map[string]string{
		"cfg":     filepath.Join(root, "volumes", "kubernetes.io~configmap", "cfg"),
		"scratch": filepath.Join(root, "volumes", "kubernetes.io~empty-dir", "scratch"),
		"sub":     filepath.Join(root, "volume-subpaths", "scratch", "app", "0"),
		"shm":     filepath.Join(root, "shm"),
		"pv":      filepath.Join(root, "volumes", "kubernetes.io~csi", "pv1", "mount"),
		"host":    t.TempDir(),
	}
	for _, d := range dirs {
		os.MkdirAll(d, 0o755)
	}
	file := filepath.Join(root, "hosts")
	os.WriteFile(file, nil, 0o644)
	bind := func(dest, src string) specs.Mount {
		return specs.Mount{Destination: dest, Type: "bind", Source: src, Options: []string{"rbind"}}
	}
	ok := &specs.Spec{Mounts: []specs.Mount{bind("/cfg", dirs["cfg"]), bind("/s", dirs["scratch"]), bind("/sub", dirs["sub"]),
		bind("/dev/shm", dirs["shm"]), bind("/etc/hosts", file), bind("/gone", filepath.Join(root, "missing"))}}
	if err := checkHostDirs(ok, hostDirsMode("", true)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"pv", "host"} {
		sp := &specs.Spec{Mounts: append(ok.Mounts, bind("/data", dirs[k]))}
		err := checkHostDirs(sp, hostDirsMode("", true))
		if err == nil || !strings.Contains(err.Error(), "mount /data") || !strings.Contains(err.Error(), "host_dirs") {
			t.Errorf("%s: %v", k, err)
		}
		if err := checkHostDirs(sp, hostDirsMode("", false)); err != nil {
			t.Errorf("%s without a TEE: %v", k, err)
		}
		if err := checkHostDirs(sp, hostDirsMode("refuse", false)); err == nil {
			t.Errorf("%s: host_dirs = refuse did not refuse", k)
		}
	}
}
