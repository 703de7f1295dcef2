package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// maxSubPathSearch bounds the directories looked at to find a subPath in
// its emptyDir. The host directory of an emptyDir holds only what the
// kubelet made in it (the subPath directories): the pod's containers write
// the guest's copy.
const maxSubPathSearch = 4096

// subPathOf returns the emptyDir directory and the path in it that the
// kubelet's bind mount source (<root>/pods/<uid>/volume-subpaths/<volume>/
// <container>/<i>) shows. The kubelet records the subPath nowhere but in
// the bind mount itself, so the directory is found by what the mount
// shows: the one in the volume with the mount's device and inode. That
// needs no knowledge of the kubelet's internals or of the host's mount
// table (whose paths are relative to each filesystem's root), and the
// guest checks the answer anyway.
func subPathOf(source string) (vol, rel string, err error) {
	p := path.Clean(source)
	vol = subPathVolume(p)
	var want syscall.Stat_t
	if err := syscall.Stat(p, &want); err != nil {
		return "", "", err
	}
	seen, found := 0, false
	err = filepath.WalkDir(vol, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if seen++; seen > maxSubPathSearch {
			return fmt.Errorf("more than %d directories in the host's emptyDir directory", maxSubPathSearch)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(q, &st); err != nil {
			return err
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			found = true
			rel, err = filepath.Rel(vol, q)
			if err == nil {
				err = fs.SkipAll
			}
			return err
		}
		return nil
	})
	if found && (err == nil || errors.Is(err, fs.SkipAll)) {
		return vol, rel, nil
	}
	if err == nil {
		err = errors.New("no directory of the volume is the one it shows")
	}
	return "", "", err
}

// subPathVolume is the host emptyDir directory of the kubelet's bind mount
// source of a subPath of it.
func subPathVolume(source string) string {
	p := path.Clean(source)
	subpaths := path.Dir(path.Dir(path.Dir(p)))
	return path.Join(path.Dir(subpaths), "volumes", emptyDirKind, path.Base(path.Dir(path.Dir(p))))
}

// emptyDirSubPaths returns the spec (raw, as containerd wrote it) with the
// source of each subPath mount of an emptyDir written as the path it
// stands for, <emptyDir>/<subPath>: the guest's own copy of the emptyDir
// holds the content, and the policy pins that form (genpolicy). Other
// fields and mounts are left as they are.
func emptyDirSubPaths(raw []byte, sp *specs.Spec) ([]byte, error) {
	return editMounts(raw, sp, func(m specs.Mount) (*mountEdit, error) {
		if !isEmptyDirSubPath(m.Source) || (m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind")) {
			return nil, nil
		}
		vol, rel, err := subPathOf(m.Source)
		if err != nil {
			return nil, fmt.Errorf("mount %s: the subPath of an emptyDir that the kubelet bound at %s: %v: %w", m.Destination, m.Source, err, errdefs.ErrInvalidArgument)
		}
		src := vol
		if rel != "." {
			src = vol + "/" + filepath.ToSlash(rel)
		}
		return &mountEdit{field: "source", value: src}, nil
	})
}
