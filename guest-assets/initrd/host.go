package initrd

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
)

// File reads the host file hostPath and returns it as a regular file at
// guestPath with permissions perm. The mode is given, not copied from the
// host, so the build machine's umask cannot change the archive.
func File(guestPath, hostPath string, perm fs.FileMode) (Entry, error) {
	data, err := os.ReadFile(hostPath)
	if err != nil {
		return Entry{}, fmt.Errorf("initrd: %s: %w", guestPath, err)
	}
	return Entry{Path: guestPath, Mode: perm.Perm(), Data: data}, nil
}

// Dir returns a directory entry with permissions perm; sticky and setgid may
// be given as Go mode bits or as Unix bits (0o1777 for /tmp).
func Dir(guestPath string, perm fs.FileMode) Entry {
	return Entry{Path: guestPath, Mode: fs.ModeDir | (perm & (fs.ModePerm | 0o7000 | fs.ModeSticky | fs.ModeSetgid))}
}

// Symlink returns a symlink at guestPath pointing at target.
func Symlink(guestPath, target string) Entry {
	return Entry{Path: guestPath, Mode: fs.ModeSymlink | 0o777, Link: target}
}

// CharDevice returns a character device node, e.g. CharDevice("/dev/console", 0o600, 5, 1).
func CharDevice(guestPath string, perm fs.FileMode, major, minor uint32) Entry {
	return Entry{Path: guestPath, Mode: fs.ModeDevice | fs.ModeCharDevice | perm.Perm(), Major: major, Minor: minor}
}

// Tree returns the contents of the host directory hostDir placed under
// guestDir (which itself is included as a 0755 directory). Modes are
// normalised so only content and names matter: directories 0755, files
// 0755 when the host file has any execute bit and 0644 otherwise, symlinks
// copied as links. Other file types are an error.
func Tree(guestDir, hostDir string) ([]Entry, error) {
	var out []Entry
	err := filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(hostDir, p)
		if err != nil {
			return err
		}
		gp := path.Join(guestDir, filepath.ToSlash(rel))
		switch t := d.Type(); {
		case t.IsDir():
			out = append(out, Dir(gp, 0o755))
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, Symlink(gp, target))
		case t.IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			perm := fs.FileMode(0o644)
			if info.Mode().Perm()&0o111 != 0 {
				perm = 0o755
			}
			e, err := File(gp, p, perm)
			if err != nil {
				return err
			}
			out = append(out, e)
		default:
			return fmt.Errorf("initrd: %s: unsupported file type %v in tree %s", p, t, hostDir)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
