package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// beneath resolves a path inside a directory the way a subPath must stay
// inside its volume: no "..", absolute or escaping link, magic link or
// other mount on the way (a link that stays inside is followed, as the
// kubelet allows). The kernel does the resolution, so a link that a
// container of the pod swaps in concurrently cannot lead outside.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// bindSubPath binds rel, a subPath of the pod's emptyDir dir, at target:
// the directory there (made with mode 0777 if missing, as the kubelet
// makes it, together with missing parents) or a regular file a container
// put there. rel comes from the host and dir's content from the pod's
// containers, so rel is resolved beneath dir and what was resolved is bound
// through its descriptor, never by path again.
func bindSubPath(dir, rel, target string) error {
	fd, err := openSubPath(dir, rel)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		err = os.MkdirAll(target, 0o700)
	case unix.S_IFREG:
		if err = os.MkdirAll(filepath.Dir(target), 0o700); err == nil {
			err = os.WriteFile(target, nil, 0o600)
		}
	default:
		return fmt.Errorf("subPath %q of an emptyDir is a %s: want a directory or a regular file: %w", rel, fileType(st.Mode), errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("subPath %q of an emptyDir: bind at %s: %w", rel, target, err)
	}
	return nil
}

// openSubPath returns an O_PATH descriptor of rel beneath dir, making the
// missing directories of rel (mode 0777) one at a time, each inside a
// parent that was itself resolved beneath dir.
func openSubPath(dir, rel string) (int, error) {
	if rel == "" || filepath.IsAbs(rel) || strings.ContainsRune(rel, 0) {
		return -1, fmt.Errorf("subPath %q of an emptyDir: want a relative path: %w", rel, errdefs.ErrInvalidArgument)
	}
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("emptyDir %s: %w", dir, err)
	}
	defer unix.Close(root)
	open := func(at int, p string, flags uint64, resolve uint64) (int, error) {
		return unix.Openat2(at, p, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolve})
	}
	fd, err := open(root, rel, unix.O_PATH, beneath)
	if !errors.Is(err, unix.ENOENT) {
		return fd, subPathErr(rel, err)
	}
	parts := strings.Split(rel, "/")
	for i, name := range parts {
		if name == "" || name == "." {
			continue
		}
		parent := filepath.Join(append([]string{"."}, parts[:i]...)...)
		pfd, err := open(root, parent, unix.O_PATH|unix.O_DIRECTORY, beneath)
		if err != nil {
			return -1, subPathErr(rel, err)
		}
		err = unix.Mkdirat(pfd, name, 0o777)
		if err == nil {
			// The umask took bits off; set the mode on what was just
			// made, opened without following a link swapped in for it.
			var cfd int
			if cfd, err = open(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, beneath|unix.RESOLVE_NO_SYMLINKS); err == nil {
				err = unix.Fchmod(cfd, 0o777)
				unix.Close(cfd)
			}
		} else if errors.Is(err, unix.EEXIST) {
			err = nil // made by another container, or a link: resolved below
		}
		unix.Close(pfd)
		if err != nil {
			return -1, subPathErr(rel, err)
		}
	}
	fd, err = open(root, rel, unix.O_PATH, beneath)
	return fd, subPathErr(rel, err)
}

func subPathErr(rel string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ELOOP):
		return fmt.Errorf("subPath %q of an emptyDir leads outside the volume (a link or mount on the way): %w", rel, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("subPath %q of an emptyDir: %w", rel, err)
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "link"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	}
	return "special file"
}
