package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// unpackTar writes a layer tar under root as one overlayfs layer.
//
// Containment: an entry name with a ".." component is refused; every
// directory is resolved with openat2(RESOLVE_IN_ROOT), so symlinks — absolute
// or relative, including ones the layer itself just created — resolve inside
// root as they will inside the container; the last component is always
// created relative to that directory fd with O_NOFOLLOW/O_EXCL-style calls.
// Hard links must point inside root too, and whiteouts only ever create a
// 0/0 device in root: they never delete outside this layer's directory.
//
// Kept as in the image: owners, modes with setuid/setgid/sticky, device
// nodes and FIFOs, times, and the file-capability and user.* xattrs. Other
// xattrs are dropped: trusted.overlay.* from a layer would forge overlayfs
// metadata (opaque, redirect), and security.* besides capabilities belong
// to the guest's LSMs.
func unpackTar(root string, r io.Reader) error {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: root, Err: err}
	}
	u := &unpacker{root: fd}
	defer unix.Close(fd)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
	}
	return u.dirTimes()
}

type unpacker struct {
	root int
	dirs []dirTime // set last: creating children changes a directory's mtime
}

type dirTime struct {
	dir, base string
	ts        []unix.Timespec
}

// splitName cleans a tar entry name into its directory and last component;
// base is "" for the layer root itself.
func splitName(name string) (dir, base string, err error) {
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
		case "..":
			return "", "", errors.New("path traversal: the name has a \"..\" component")
		default:
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return "", "", nil
	}
	return strings.Join(parts[:len(parts)-1], "/"), parts[len(parts)-1], nil
}

// open resolves rel (a cleaned relative path, "" for root) inside the root.
func (u *unpacker) open(rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for range 16 {
		fd, err := unix.Openat2(u.root, rel, how)
		if err != unix.EAGAIN && err != unix.EINTR {
			return fd, err
		}
	}
	return -1, unix.EAGAIN
}

// mkdirAll opens directory rel inside root, creating what is missing (tars
// may omit parent directories) with mode 0755 owned by root, as containerd does.
func (u *unpacker) mkdirAll(rel string) (int, error) {
	fd, err := u.open(rel, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil || err != unix.ENOENT || rel == "" {
		return fd, err
	}
	parent, base := path.Split(rel)
	pfd, err := u.mkdirAll(strings.TrimSuffix(parent, "/"))
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil && err != unix.EEXIST {
		return -1, err
	}
	fd, err = u.open(rel, unix.O_PATH|unix.O_DIRECTORY)
	if err == unix.ENOENT {
		// rel exists but does not resolve: a symlink to a directory this
		// layer lacks. Layers record real paths, so refuse rather than guess.
		return -1, fmt.Errorf("%s is a symlink to a directory not in this layer", rel)
	}
	return fd, err
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	dir, base, err := splitName(hdr.Name)
	if err != nil {
		return err
	}
	if base == "" {
		return nil // the layer root: the staging directory stands for it
	}
	pfd, err := u.mkdirAll(dir)
	if err != nil {
		return fmt.Errorf("parent directory: %w", err)
	}
	defer unix.Close(pfd)
	if strings.HasPrefix(base, ".wh.") {
		return u.whiteout(pfd, dir, base)
	}
	var st unix.Stat_t
	exists := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	if exists && !(hdr.Typeflag == tar.TypeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR) {
		// A later entry replaces an earlier one of the same layer.
		if err := removeAt(pfd, base); err != nil {
			return err
		}
	}
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && err != unix.EEXIST {
			return err
		}
		if err := u.fdMeta(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY, hdr, mode, nil); err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirTime{dir, base, times(hdr)})
		return nil
	case tar.TypeReg, tar.TypeRegA:
		return u.fdMeta(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, hdr, mode, r)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return err
		}
	case tar.TypeLink:
		if err := u.hardlink(pfd, base, hdr.Linkname); err != nil {
			return err
		}
		return nil // a hard link shares its target's inode and metadata
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(pfd, base, typ|mode, int(dev)); err != nil {
			return err
		}
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return err
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	if hdr.Typeflag == tar.TypeSymlink {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return unix.UtimesNanoAt(pfd, base, times(hdr), unix.AT_SYMLINK_NOFOLLOW)
}

// fdMeta opens base (creating a regular file when flags say so), writes
// content if any, then sets owner, mode (after chown, which clears setuid),
// xattrs (after chown, which clears file capabilities) and times.
func (u *unpacker) fdMeta(pfd int, base string, flags int, hdr *tar.Header, mode uint32, content io.Reader) error {
	fd, err := unix.Openat(pfd, base, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	if content != nil {
		if _, err := io.Copy(f, content); err != nil {
			return err
		}
	}
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !(name == "security.capability" || strings.HasPrefix(name, "user.")) {
			continue
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	if hdr.Typeflag != tar.TypeDir {
		return unix.UtimesNanoAt(pfd, base, times(hdr), unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// hardlink links base to the entry linkname of the same layer. The target
// resolves inside root, and linkat does not follow a final symlink, so a
// link can only ever name a file of this layer.
func (u *unpacker) hardlink(pfd int, base, linkname string) error {
	tdir, tbase, err := splitName(linkname)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", linkname, err)
	}
	if tbase == "" {
		return fmt.Errorf("hard link target %q: the layer root", linkname)
	}
	tfd, err := u.open(tdir, unix.O_PATH|unix.O_DIRECTORY)
	if err == unix.ENOENT {
		return fmt.Errorf("hard link target %q is not in this layer", linkname)
	}
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", linkname, err)
	}
	defer unix.Close(tfd)
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		if err == unix.ENOENT {
			return fmt.Errorf("hard link target %q is not in this layer", linkname)
		}
		return fmt.Errorf("hard link to %q: %w", linkname, err)
	}
	return nil
}

// whiteout turns an OCI whiteout into its overlayfs form: ".wh.NAME" becomes
// a 0/0 character device NAME, ".wh..wh..opq" the opaque xattr on its
// directory. Per the OCI spec a whiteout hides lower layers only, so one
// does not replace an entry of the same layer.
func (u *unpacker) whiteout(pfd int, dir, base string) error {
	if base == ".wh..wh..opq" {
		dfd, err := u.open(dir, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		return unix.Fsetxattr(dfd, "trusted.overlay.opaque", []byte("y"), 0)
	}
	if strings.HasPrefix(base, ".wh..wh.") {
		return nil // aufs bookkeeping (.wh..wh.plnk and the like)
	}
	name := strings.TrimPrefix(base, ".wh.")
	if name == "" || name == "." || name == ".." {
		return errors.New("whiteout without a name")
	}
	var st unix.Stat_t
	if unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return nil
	}
	return unix.Mknodat(pfd, name, unix.S_IFCHR, 0)
}

// removeAt deletes name under dirfd, recursively for a directory, without
// following symlinks.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || (err != unix.EISDIR && err != unix.EPERM) {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	f.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

func (u *unpacker) dirTimes() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		fd, err := u.open(d.dir, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		err = unix.UtimesNanoAt(fd, d.base, d.ts, unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("directory %s/%s times: %w", d.dir, d.base, err)
		}
	}
	return nil
}

func times(hdr *tar.Header) []unix.Timespec {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return []unix.Timespec{ts(at), ts(hdr.ModTime)}
}

func ts(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	return unix.NsecToTimespec(t.UnixNano())
}
