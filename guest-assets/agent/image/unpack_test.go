package image

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sandbox is a layer root next to an "outside" directory holding a victim
// file: nothing a layer does may touch outside.
func sandbox(t *testing.T) (root, outside string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, as the agent is")
	}
	base := t.TempDir()
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("intact"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, outside
}

func checkOutside(t *testing.T, outside string) {
	t.Helper()
	ents, _ := os.ReadDir(outside)
	b, err := os.ReadFile(filepath.Join(outside, "victim"))
	if len(ents) != 1 || err != nil || string(b) != "intact" {
		t.Errorf("outside changed: %v entries, victim %q %v", len(ents), b, err)
	}
	var st unix.Stat_t
	if unix.Stat(filepath.Join(outside, "victim"), &st) == nil && st.Nlink != 1 {
		t.Errorf("victim has %d links", st.Nlink)
	}
}

func unpack(t *testing.T, root string, entries ...entry) error {
	t.Helper()
	return unpackTar(root, bytes.NewReader(tarBytes(t, entries...)))
}

func TestUnpackTraversalRefused(t *testing.T) {
	root, outside := sandbox(t)
	for _, n := range []string{"../outside/victim", "a/../../outside/victim", "/../outside/evil"} {
		err := unpack(t, root, file(n, "pwned"))
		if err == nil || !strings.Contains(err.Error(), "path traversal") {
			t.Errorf("%s: %v", n, err)
		}
	}
	checkOutside(t, outside)
}

// Symlinks, absolute or relative, resolve inside the layer root, as they
// will in the container.
func TestUnpackSymlinkEscapeContained(t *testing.T) {
	root, outside := sandbox(t)
	if err := unpack(t, root, symlink("dangling", outside), file("dangling/x", "")); err == nil || !strings.Contains(err.Error(), "symlink to a directory not in this layer") {
		t.Errorf("dangling symlink parent: %v", err)
	}
	err := unpack(t, root,
		dir(outside[1:]), // the same path inside the root: where "abs" points in the container
		symlink("abs", outside),
		file("abs/victim", "pwned"),
		symlink("rel", "../../../../../.."+outside),
		file("rel/new", "pwned"),
		symlink("up", ".."),
		file("up/up/escaped", "pwned"),
	)
	if err != nil {
		t.Fatal(err)
	}
	checkOutside(t, outside)
	for _, p := range []string{outside + "/victim", outside + "/new", "escaped"} {
		if b, err := os.ReadFile(filepath.Join(root, p)); err != nil || string(b) != "pwned" {
			t.Errorf("%s not written inside the root: %q %v", p, b, err)
		}
	}
	if l, _ := os.Readlink(filepath.Join(root, "abs")); l != outside {
		t.Errorf("symlink target changed: %q", l)
	}
}

func TestUnpackHardlinkEscapeRefused(t *testing.T) {
	root, outside := sandbox(t)
	if err := unpack(t, root, hardlink("h", "../outside/victim")); err == nil || !strings.Contains(err.Error(), "path traversal") {
		t.Errorf("dotdot hard link: %v", err)
	}
	if err := unpack(t, root, symlink("s", outside), hardlink("h2", "s/victim")); err == nil || !strings.Contains(err.Error(), "not in this layer") {
		t.Errorf("hard link through a symlink: %v", err)
	}
	if err := unpack(t, root, symlink("s2", outside+"/victim"), hardlink("h3", "s2")); err != nil {
		t.Errorf("hard link to a symlink: %v", err)
	} else if l, err := os.Readlink(filepath.Join(root, "h3")); err != nil || l != outside+"/victim" {
		t.Errorf("hard link to a symlink must link the symlink itself: %q %v", l, err)
	}
	if err := unpack(t, root, file("in", "data"), hardlink("in2", "in")); err != nil {
		t.Errorf("hard link in the layer: %v", err)
	}
	checkOutside(t, outside)
}

func TestUnpackWhiteouts(t *testing.T) {
	root, outside := sandbox(t)
	if err := unpack(t, root, file("../.wh.victim", "")); err == nil {
		t.Errorf("whiteout with ..: accepted")
	}
	err := unpack(t, root,
		dir(outside[1:]), symlink("s", outside), file("s/.wh.victim", ""),
		dir("d"), file("d/.wh..wh..opq", ""), file("d/kept", "k"),
		file(".wh.gone", ""),
		file("same", "x"), file(".wh.same", ""),
		file(".wh..wh.plnk", ""),
	)
	if err != nil {
		t.Fatal(err)
	}
	checkOutside(t, outside)
	isWhiteout := func(p string) bool {
		var st unix.Stat_t
		return unix.Lstat(filepath.Join(root, p), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
	}
	if !isWhiteout("gone") || !isWhiteout(outside+"/victim") {
		t.Errorf("whiteouts not made as 0/0 devices inside the root")
	}
	if isWhiteout("same") {
		t.Errorf("a whiteout hid an entry of its own layer")
	}
	buf := make([]byte, 8)
	if n, err := unix.Getxattr(filepath.Join(root, "d"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque dir: %q %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(root, ".wh..wh.plnk")); err == nil {
		t.Errorf("aufs metadata unpacked")
	}
}

// The container's root gets its devices, setuid bits and owners; xattrs
// that would forge overlayfs metadata are dropped.
func TestUnpackKeepsDevicesSetuidOwners(t *testing.T) {
	root, _ := sandbox(t)
	err := unpack(t, root,
		dir("dev"),
		entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		entry{name: "dev/loop0", typ: tar.TypeBlock, mode: 0o660, major: 7, minor: 0, gid: 6},
		entry{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
		entry{name: "su", typ: tar.TypeReg, mode: 0o4755, body: "x"},
		entry{name: "sg", typ: tar.TypeDir, mode: 0o2775 | 0o1000, uid: 1000, gid: 1000},
		entry{name: "owned", typ: tar.TypeReg, mode: 0o640, uid: 1234, gid: 5678, body: "y",
			pax: map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.trusted.overlay.redirect": "/etc"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	check := func(p string, typ, perm uint32, rdev uint64, uid, gid uint32) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&unix.S_IFMT != typ || st.Mode&0o7777 != perm || st.Rdev != rdev || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %o rdev %d owner %d:%d", p, st.Mode, st.Rdev, st.Uid, st.Gid)
		}
	}
	check("dev/null", unix.S_IFCHR, 0o666, unix.Mkdev(1, 3), 0, 0)
	check("dev/loop0", unix.S_IFBLK, 0o660, unix.Mkdev(7, 0), 0, 6)
	check("fifo", unix.S_IFIFO, 0o600, 0, 0, 0)
	check("su", unix.S_IFREG, 0o4755, 0, 0, 0)
	check("sg", unix.S_IFDIR, 0o3775, 0, 1000, 1000)
	check("owned", unix.S_IFREG, 0o640, 0, 1234, 5678)
	if sz, _ := unix.Llistxattr(filepath.Join(root, "owned"), make([]byte, 256)); sz > 0 {
		t.Errorf("trusted xattrs from the layer were kept")
	}
}

// A later entry of the same name replaces an earlier one, even a directory.
func TestUnpackReplace(t *testing.T) {
	root, _ := sandbox(t)
	err := unpack(t, root, dir("x"), file("x/a", "1"), file("x", "now a file"), file("y", "1"), symlink("y", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "x")); string(b) != "now a file" {
		t.Errorf("x = %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(root, "y")); l != "x" {
		t.Errorf("y -> %q", l)
	}
}

// Mount: the overlay of unpacked layers shows whiteouts and opaque
// directories as the image means them, and writes go to the container's own
// layer.
func TestMountOverlay(t *testing.T) {
	reg := newRegistry(t)
	s := newTestStore(t, 0)
	lower := layer(t, false, dir("etc"), file("etc/passwd", "root"), file("etc/shadow", "secret"), dir("opq"), file("opq/old", "old"))
	upper := layer(t, true, dir("etc"), file("etc/.wh.shadow", ""), dir("opq"), file("opq/.wh..wh..opq", ""), file("opq/new", "new"))
	reg.push(t, reg.ref("ov:v1"), image(t, nil, lower, upper))
	im, err := s.Pull(bg, reg.ref("ov:v1"), PullOptions{Registry: reg.reg()})
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := s.Mount(im, "c1", target); err != nil {
		t.Skipf("overlayfs not available here: %v", err)
	}
	defer s.Unmount("c1", target)
	if b, _ := os.ReadFile(target + "/etc/passwd"); string(b) != "root" {
		t.Errorf("passwd = %q", b)
	}
	for _, p := range []string{"etc/shadow", "opq/old"} {
		if _, err := os.Lstat(filepath.Join(target, p)); !os.IsNotExist(err) {
			t.Errorf("%s visible through the overlay: %v", p, err)
		}
	}
	if b, _ := os.ReadFile(target + "/opq/new"); string(b) != "new" {
		t.Errorf("opq/new = %q", b)
	}
	if err := os.WriteFile(target+"/etc/passwd", []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if readLayerFile(t, im, "etc/passwd") != "root" {
		t.Errorf("a container write reached the shared layer")
	}
	if err := s.Unmount("c1", target); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "containers", "c1")); !os.IsNotExist(err) {
		t.Errorf("container layer left: %v", err)
	}
	if err := s.Mount(im, "../x", target); err == nil {
		t.Errorf("container id with a slash accepted")
	}
}
