package container

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// openSubPath resolves a subPath inside its emptyDir, making what is
// missing; the containers of the pod write the emptyDir and the host names
// the path, so every way out is refused and nothing is made outside.
func TestOpenSubPathConfined(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "emptydir")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(dir, "real"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"abs":     outside,      // absolute link out
		"up":      "../outside", // relative link out
		"in":      "real",       // a link that stays inside: allowed
		"procfd":  "/proc/self/fd/0",
		"dangle":  "real/missing", // inside, but nothing there
		"rootdir": "/",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Missing directories are made, mode 0777 whatever the umask.
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	for _, rel := range []string{"new", "real/a/b/c", "in/x", "in"} {
		fd, err := openSubPath(dir, rel)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		unix.Close(fd)
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil || !fi.IsDir() {
			t.Errorf("%s: %v %v", rel, fi, err)
		}
	}
	for _, rel := range []string{"new", "real/a", "real/a/b/c", "real/x"} {
		if fi, err := os.Stat(filepath.Join(dir, rel)); err != nil || fi.Mode().Perm() != 0o777 {
			t.Errorf("%s: mode %v %v, want 0777", rel, fi.Mode(), err)
		}
	}

	// Ways out, and what a host or container could put in the way.
	for _, rel := range []string{"abs", "abs/made", "up", "up/made", "procfd", "rootdir/etc", "../outside", "real/../../outside", "/etc", "", "a\x00b"} {
		fd, err := openSubPath(dir, rel)
		if err == nil {
			unix.Close(fd)
			t.Errorf("%q: resolved", rel)
			continue
		}
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v, want an invalid-argument error", rel, err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("made outside the emptyDir: %v", ents)
	}
	if _, err := openSubPath(dir, "dangle"); err == nil {
		t.Errorf("a dangling link resolved")
	}
	// A FIFO opens without blocking (O_PATH); binding refuses it.
	if err := bindSubPath(dir, "fifo", filepath.Join(base, "target")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("fifo: %v", err)
	}
}

// bindSubPath shows the emptyDir's directory at the target: what one
// container writes through the subPath, the whole-volume mount sees.
func TestBindSubPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	base := t.TempDir()
	dir, target := filepath.Join(base, "emptydir"), filepath.Join(base, "subpaths", "c1", "0")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := bindSubPath(dir, "logs/app", target); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "logs", "app", "f")); err != nil || string(b) != "x" {
		t.Errorf("through the emptyDir: %q %v", b, err)
	}
	// A regular file a container left there is bound as a file.
	if err := os.WriteFile(filepath.Join(dir, "conf"), []byte("c"), 0o644); err != nil {
		t.Fatal(err)
	}
	ftarget := filepath.Join(base, "subpaths", "c1", "1")
	if err := bindSubPath(dir, "conf", ftarget); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(ftarget, unix.MNT_DETACH)
	if b, err := os.ReadFile(ftarget); err != nil || string(b) != "c" {
		t.Errorf("file subPath: %q %v", b, err)
	}
}
