package container

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// A disk is found by serial only once it has a size: sysfs shows the
// serial a moment before the disk can be mounted.
func TestFindDiskWaitsForSize(t *testing.T) {
	sys := t.TempDir()
	m := NewManager(Config{SysBlock: sys, DevDir: "/dev", DeviceWait: 2 * time.Second})
	vda := filepath.Join(sys, "vda")
	os.MkdirAll(vda, 0o755)
	os.WriteFile(filepath.Join(vda, "serial"), []byte("other\n"), 0o644)
	vdb := filepath.Join(sys, "vdb")
	os.MkdirAll(vdb, 0o755)
	os.WriteFile(filepath.Join(vdb, "serial"), []byte("rootfs1\n"), 0o644)
	os.WriteFile(filepath.Join(vdb, "size"), []byte("0\n"), 0o644)

	found := make(chan string, 1)
	go func() {
		dev, err := m.FindDisk(context.Background(), "rootfs1")
		if err != nil {
			dev = err.Error()
		}
		found <- dev
	}()
	select {
	case dev := <-found:
		t.Fatalf("found %q while its size was 0", dev)
	case <-time.After(100 * time.Millisecond):
	}
	os.WriteFile(filepath.Join(vdb, "size"), []byte("3880\n"), 0o644)
	if dev := <-found; dev != "/dev/vdb" {
		t.Errorf("FindDisk = %q, want /dev/vdb", dev)
	}

	m = NewManager(Config{SysBlock: sys, DeviceWait: 50 * time.Millisecond})
	if _, err := m.FindDisk(context.Background(), "absent"); !errdefs.IsNotFound(err) {
		t.Errorf("missing disk: %v, want NotFound", err)
	}
}

// The sandbox container gets its pause rootfs only when runc is to run it:
// Prepare leaves rootfs empty, MountPauseRootfs binds coco-pause as /pause
// read-only, and Remove undoes it.
func TestPauseRootfsOnlyForRunc(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs and a bind mount (what it checks: runc's pause rootfs is built on demand and removed)")
	}
	dir := t.TempDir()
	pauseBin := filepath.Join(dir, "coco-pause")
	os.WriteFile(pauseBin, []byte("#!pause"), 0o755)
	m := NewManager(Config{BundleRoot: dir, PauseBinary: pauseBin, CgroupParent: "/coco"})
	spec := []byte(`{"ociVersion":"1.2.0","process":{"args":["/pause"],"cwd":"/"},"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"}]}}`)
	ctx := context.Background()
	bundle, err := m.Prepare(ctx, &api.PrepareContainerRequest{ContainerId: "sb", SandboxContainer: true, Spec: spec, Rootfs: &api.Rootfs{Source: &api.Rootfs_Agent{Agent: &emptypb.Empty{}}}})
	if err != nil {
		t.Fatal(err)
	}
	if !m.IsSandbox("sb") || m.IsSandbox("other") {
		t.Fatal("IsSandbox")
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "pause")); !os.IsNotExist(err) {
		t.Fatalf("pause rootfs built at Prepare: %v", err)
	}
	if err := m.MountPauseRootfs("sb"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(bundle, "rootfs", "pause")); err != nil || string(b) != "#!pause" {
		t.Fatalf("/pause in the rootfs: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "rootfs", "pause"), nil, 0o755); err == nil {
		t.Error("/pause is writable")
	}
	if err := m.MountPauseRootfs("other"); !errdefs.IsNotFound(err) {
		t.Errorf("MountPauseRootfs of a container that is not the sandbox: %v", err)
	}
	if err := m.Remove(ctx, "sb"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Errorf("bundle left after Remove: %v", err)
	}
}

// Under containerd's sandbox API (UseVMNamespaces) a container that joins
// the pod's ipc and uts namespaces stays in the VM's (no entry), and one
// that joins the pod's pid namespace gets the holder's, asked for with the
// sandbox id. Without it, joining needs a running sandbox container.
func TestVMNamespaces(t *testing.T) {
	ctx := context.Background()
	spec := []byte(`{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},"linux":{"namespaces":[
		{"type":"pid","path":"/proc/99/ns/pid"},{"type":"ipc","path":"/proc/99/ns/ipc"},{"type":"uts","path":"/proc/99/ns/uts"},{"type":"mount"}]}}`)
	var asked []string
	holder := func(_ context.Context, sandboxID string) (int, error) {
		asked = append(asked, sandboxID)
		return 41, nil
	}
	m := NewManager(Config{BundleRoot: t.TempDir(), CgroupParent: "/coco", PodPIDHolder: holder})
	m.UseVMNamespaces("pod1")
	bundle, err := m.Prepare(ctx, &api.PrepareContainerRequest{ContainerId: "c1", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	got := map[specs.LinuxNamespaceType]string{}
	for _, ns := range s.Linux.Namespaces {
		got[ns.Type] = ns.Path
	}
	if _, ok := got[specs.IPCNamespace]; ok {
		t.Errorf("ipc namespace entry %q kept: the container should stay in the VM's", got[specs.IPCNamespace])
	}
	if _, ok := got[specs.UTSNamespace]; ok {
		t.Errorf("uts namespace entry %q kept: the container should stay in the VM's", got[specs.UTSNamespace])
	}
	if got[specs.PIDNamespace] != "/proc/41/ns/pid" || len(asked) != 1 || asked[0] != "pod1" {
		t.Errorf("pid namespace %q, holder asked for %q; want /proc/41/ns/pid, once for pod1", got[specs.PIDNamespace], asked)
	}

	m = NewManager(Config{BundleRoot: t.TempDir(), PodPIDHolder: holder})
	if _, err := m.Prepare(ctx, &api.PrepareContainerRequest{ContainerId: "c1", Spec: spec}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("join without sandbox container or VM namespaces: err = %v, want FailedPrecondition", err)
	}
}

// A sealed env value and a sealed file reach the container as plaintext in
// the guest bundle; a secret that cannot be unsealed fails the container
// and leaves no bundle behind.
func TestPrepareUnseals(t *testing.T) {
	ctx := context.Background()
	spec := []byte(`{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/","env":["A=1","S=sealed.h.p.s"]},"root":{"path":"rootfs"},
		"mounts":[{"destination":"/etc/secret/key","type":"bind","source":"/host/key","options":["rbind","ro"]}]}`)
	req := &api.PrepareContainerRequest{ContainerId: "c1", Spec: spec,
		Files: []*api.File{{Destination: "/etc/secret/key", Content: []byte("sealed.h.q.s\n"), Mode: 0o600}}}
	unseal := func(_ context.Context, s string) ([]byte, error) {
		if s == "sealed.h.bad.s" {
			return nil, errdefs.ErrPermissionDenied
		}
		return []byte("plain-" + s[len("sealed.h."):len(s)-2]), nil
	}
	root := t.TempDir()
	m := NewManager(Config{BundleRoot: root, CgroupParent: "/coco", Unseal: unseal})
	bundle, err := m.Prepare(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Process.Env[1] != "S=plain-p" {
		t.Errorf("env %q", s.Process.Env)
	}
	if f, _ := os.ReadFile(s.Mounts[len(s.Mounts)-1].Source); string(f) != "plain-q" {
		t.Errorf("file %q", f)
	}

	req.ContainerId = "c2"
	req.Spec = []byte(`{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/","env":["S=sealed.h.bad.s"]},"root":{"path":"rootfs"}}`)
	req.Files = nil
	if _, err := m.Prepare(ctx, req); !errdefs.IsPermissionDenied(err) {
		t.Fatalf("refused unseal: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "c2")); !os.IsNotExist(err) {
		t.Fatalf("bundle left behind: %v", err)
	}
}

// The files of a directory mount (a kubelet secret volume) form that
// directory in the guest, sealed ones unsealed; a destination under
// another file's is refused.
func TestPrepareVolumeFiles(t *testing.T) {
	ctx := context.Background()
	spec := []byte(`{"ociVersion":"1.2.0","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},
		"mounts":[{"destination":"/etc/creds","type":"bind","source":"/var/lib/kubelet/pods/u/volumes/kubernetes.io~secret/creds","options":["rbind","ro"]}]}`)
	req := &api.PrepareContainerRequest{ContainerId: "c1", Spec: spec, Files: []*api.File{
		{Destination: "/etc/creds/user", Content: []byte("app")},
		{Destination: "/etc/creds/nested/password", Content: []byte("sealed.h.pw.s"), Mode: 0o600},
	}}
	unseal := func(_ context.Context, s string) ([]byte, error) { return []byte("plain"), nil }
	m := NewManager(Config{BundleRoot: t.TempDir(), CgroupParent: "/coco", Unseal: unseal})
	bundle, err := m.Prepare(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	src := s.Mounts[0].Source
	if src != filepath.Join(bundle, "files", "etc", "creds") || s.Mounts[0].Type != "bind" {
		t.Fatalf("mount %+v", s.Mounts[0])
	}
	if u, _ := os.ReadFile(filepath.Join(src, "user")); string(u) != "app" {
		t.Errorf("user %q", u)
	}
	if p, _ := os.ReadFile(filepath.Join(src, "nested", "password")); string(p) != "plain" {
		t.Errorf("password %q", p)
	}

	req.ContainerId = "c2"
	req.Files = append(req.Files, &api.File{Destination: "/etc/creds/user/x", Content: []byte("y")})
	if _, err := m.Prepare(ctx, req); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("file under a file: %v", err)
	}
}
