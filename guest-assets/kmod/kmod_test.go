//go:build linux

package kmod

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseManifest(t *testing.T) {
	mods, err := ParseManifest(strings.NewReader("# deps first\n\n/lib/a.ko\n  /lib/b.ko  opt=1 x=y \n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) != 2 || mods[0] != (Module{Path: "/lib/a.ko"}) || mods[1] != (Module{Path: "/lib/b.ko", Params: "opt=1 x=y"}) {
		t.Fatalf("got %+v", mods)
	}
	for _, bad := range []string{"lib/a.ko\n", "/lib/a.ko.xz\n"} {
		_, err := ParseManifest(strings.NewReader("# c\n" + bad))
		if err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: got %v, want an error naming line 2", bad, err)
		}
	}
}

// fakeKernel records loads and answers like the kernel would.
type fakeKernel struct {
	loaded []string
	answer map[string]error
}

func (k *fakeKernel) finit(fd int, params string, flags int) error {
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return err
	}
	name := filepath.Base(p)
	k.loaded = append(k.loaded, name+"("+params+")")
	return k.answer[name]
}

func writeModules(t *testing.T, names ...string) (dir string, manifest string) {
	t.Helper()
	dir = t.TempDir()
	var lines []string
	for _, n := range names {
		p := filepath.Join(dir, n+".ko")
		if err := os.WriteFile(p, []byte("\x7fELF"), 0o644); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, p)
	}
	manifest = filepath.Join(dir, "modules")
	if err := os.WriteFile(manifest, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, manifest
}

func TestLoadOrderAndEEXIST(t *testing.T) {
	dir, _ := writeModules(t, "vsock", "virtio_net")
	k := &fakeKernel{answer: map[string]error{"vsock.ko": unix.EEXIST}}
	mods := []Module{{Path: filepath.Join(dir, "vsock.ko")}, {Path: filepath.Join(dir, "virtio_net.ko"), Params: "napi_tx=1"}}
	if err := load(mods, k.finit); err != nil {
		t.Fatalf("EEXIST must count as loaded: %v", err)
	}
	if got := strings.Join(k.loaded, " "); got != "vsock.ko() virtio_net.ko(napi_tx=1)" {
		t.Fatalf("load order: %s", got)
	}
}

func TestLoadStopsAtFailure(t *testing.T) {
	dir, _ := writeModules(t, "a", "b", "c")
	k := &fakeKernel{answer: map[string]error{"b.ko": unix.ENOEXEC}}
	mods := []Module{{Path: filepath.Join(dir, "a.ko")}, {Path: filepath.Join(dir, "b.ko")}, {Path: filepath.Join(dir, "c.ko")}}
	err := load(mods, k.finit)
	if err == nil || !strings.Contains(err.Error(), "b.ko") || !strings.Contains(err.Error(), "another kernel") {
		t.Fatalf("got %v, want an error naming b.ko", err)
	}
	if len(k.loaded) != 2 {
		t.Fatalf("loaded %v after a failure, want to stop at b", k.loaded)
	}
	err = load([]Module{{Path: filepath.Join(dir, "missing.ko")}}, k.finit)
	if err == nil || !strings.Contains(err.Error(), "missing.ko") {
		t.Fatalf("missing file: got %v", err)
	}
}

// A kernel that enforces module signatures rejects the stripped modules;
// the error says how to build an initrd it accepts.
func TestLoadSignatureEnforced(t *testing.T) {
	dir, _ := writeModules(t, "vsock")
	for _, errno := range []error{unix.EKEYREJECTED, unix.EPERM} {
		k := &fakeKernel{answer: map[string]error{"vsock.ko": errno}}
		err := load([]Module{{Path: filepath.Join(dir, "vsock.ko")}}, k.finit)
		if !errors.Is(err, errno) || !strings.Contains(err.Error(), "KEEP_MODULE_SIGNATURES=1") {
			t.Errorf("%v: got %v, want it wrapped with the fix", errno, err)
		}
	}
}

func TestLoadManifestErrors(t *testing.T) {
	if err := LoadManifest(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("missing manifest: got %v", err)
	}
	dir := t.TempDir()
	m := filepath.Join(dir, "modules")
	if err := os.WriteFile(m, []byte("relative.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LoadManifest(m); err == nil || !strings.Contains(err.Error(), m) {
		t.Fatalf("bad manifest: got %v, want it named", err)
	}
}

func TestSplit(t *testing.T) {
	var mods []Module
	for _, n := range []string{"vsock", "virtio_ring", "vmw_vsock_virtio_transport", "virtio-pci", "virtio_blk", "overlay"} {
		mods = append(mods, Module{Path: "/lib/modules/x/" + n + ".ko"})
	}
	first, rest := Split(mods, "virtio_pci", "vmw_vsock_virtio_transport", "not_listed")
	if len(first) != 4 || len(rest) != 2 || first[3].Name() != "virtio_pci" || rest[0].Name() != "virtio_blk" {
		t.Fatalf("Split: first %v, rest %v", first, rest)
	}
	if first, rest := Split(mods, "nothing"); len(first) != 0 || len(rest) != len(mods) {
		t.Fatalf("Split with no listed name: first %v, rest %v", first, rest)
	}
}

// A kernel with everything built in (GUEST_KERNEL=own) ships a manifest
// with only a comment: the agent's loader then loads nothing and succeeds,
// and Split and Take hand back empty lists.
func TestEmptyManifest(t *testing.T) {
	m := filepath.Join(t.TempDir(), "modules")
	if err := os.WriteFile(m, []byte("# 6.12.118-coco: everything built in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mods, err := ReadManifest(m)
	if err != nil || len(mods) != 0 {
		t.Fatalf("ReadManifest = %v, %v; want no modules", mods, err)
	}
	k := &fakeKernel{}
	first, rest := Split(mods, "virtio_pci")
	picked, rest := Take(rest, "sev_guest")
	if err := load(append(append(first, picked...), rest...), k.finit); err != nil || len(k.loaded) != 0 {
		t.Fatalf("load of an empty manifest: %v, loaded %v", err, k.loaded)
	}
}
