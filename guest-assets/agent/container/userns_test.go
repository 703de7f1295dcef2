package container

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/guest-assets/agent/spec"
)

func fakeProc(t *testing.T, uidMap, gidMap string) string {
	dir := filepath.Join(t.TempDir(), "42")
	if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	for f, text := range map[string]string{"uid_map": uidMap, "gid_map": gidMap} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "ns", "user")
}

// The pod's root is read from the namespace's maps as the kernel shows
// them (padded columns, several ranges).
func TestNSRoot(t *testing.T) {
	ns := fakeProc(t, "         1      70000       10\n         0       1000          1\n", "         0       2000      65536\n")
	uid, gid, err := nsRoot(ns)
	if err != nil || uid != 1000 || gid != 2000 {
		t.Fatalf("nsRoot = %d, %d, %v; want 1000, 2000", uid, gid, err)
	}
	if _, _, err := nsRoot(fakeProc(t, "1 1000 10\n", "0 1000 10\n")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a namespace without root: %v, want ErrFailedPrecondition", err)
	}
	if _, _, err := nsRoot(fakeProc(t, "0 x 1\n", "0 1000 10\n")); err == nil {
		t.Fatal("a malformed uid_map was read")
	}
}

// Only the pod's user namespace (a path) gets an id-mapped rootfs; a
// container's own new one is refused rather than left unable to open its
// rootfs; the sandbox container's tmpfs is chowned instead.
func TestRootfsUserNS(t *testing.T) {
	for _, tc := range []struct {
		ns      *spec.UserNamespace
		sandbox bool
		want    string
		err     error
	}{
		{nil, false, "", nil},
		{&spec.UserNamespace{Path: "/proc/7/ns/user"}, false, "/proc/7/ns/user", nil},
		{&spec.UserNamespace{UID: []specs.LinuxIDMapping{{HostID: 1000, Size: 1}}}, true, "", nil},
		{&spec.UserNamespace{UID: []specs.LinuxIDMapping{{HostID: 1000, Size: 1}}}, false, "", errdefs.ErrNotImplemented},
	} {
		got, err := rootfsUserNS(tc.ns, tc.sandbox)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("rootfsUserNS(%+v, %v) = %q, %v; want %q, %v", tc.ns, tc.sandbox, got, err, tc.want, tc.err)
		}
	}
}

// A sandbox whose mappings leave its root unmapped is refused naming them.
func TestChownPauseRootUnmapped(t *testing.T) {
	ns := &spec.UserNamespace{UID: []specs.LinuxIDMapping{{ContainerID: 1, HostID: 1000, Size: 10}}, GID: []specs.LinuxIDMapping{{HostID: 1000, Size: 10}}}
	if err := chownPauseRoot(t.TempDir(), ns); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("err %v, want ErrInvalidArgument", err)
	}
}
