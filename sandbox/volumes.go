package sandbox

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// fileVolumeKinds are the kubelet volume plugins whose directories hold a
// few small files the kubelet writes (secret, configMap, projected,
// downwardAPI): their content is copied into the guest with the container,
// as files are. Other directories (emptyDir, hostPath) are not copied: the
// guest gives the pod an empty directory of its own for each.
var fileVolumeKinds = []string{"kubernetes.io~secret", "kubernetes.io~configmap", "kubernetes.io~projected", "kubernetes.io~downward-api"}

// isFileVolume says whether a bind mount source is a kubelet file volume:
// <kubelet root>/pods/<uid>/volumes/<kind>/<name>.
func isFileVolume(source string) bool {
	dir, _ := path.Split(path.Clean(source))
	kind := path.Base(dir)
	return path.Base(path.Dir(path.Clean(dir))) == "volumes" && slices.Contains(fileVolumeKinds, kind)
}

// atomicData is the kubelet's atomic writer link to the current version
// of a volume's files; the user-visible names are links through it.
const atomicData = "..data"

// readFileVolume returns the files of a kubelet file volume at source, as
// Files under dest. It reads the current version (..data) when the kubelet's
// atomic writer made the directory, else the directory itself; names that
// start with ".." (the writer's own) and anything but regular files are
// skipped. Everything is read through an os.Root at source, so no link
// leads the shim outside the volume. budget is the bytes still allowed.
func readFileVolume(source, dest string, budget *int) ([]*api.File, error) {
	root, err := os.OpenRoot(source)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", source, err)
	}
	defer root.Close()
	base := "."
	if fi, err := root.Lstat(atomicData); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		base = atomicData
	}
	var files []*api.File
	err = fs.WalkDir(root.FS(), base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != base && strings.HasPrefix(d.Name(), "..") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		rel := p
		if base != "." {
			rel = strings.TrimPrefix(p, base+"/")
		}
		if len(files) >= api.MaxFiles {
			return fmt.Errorf("more than %d files; a confidential pod gets a volume's files copied into the guest, so mount fewer keys (items:): %w", api.MaxFiles, errdefs.ErrInvalidArgument)
		}
		b, mode, err := readRootFile(root, p, budget)
		if err != nil {
			return err
		}
		files = append(files, &api.File{Destination: path.Join(dest, rel), Content: b, Mode: mode})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", source, err)
	}
	return files, nil
}

// readRootFile reads one regular file of a volume within budget.
func readRootFile(root *os.Root, p string, budget *int) ([]byte, uint32, error) {
	f, err := root.Open(p)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s changed into %s while being read: %w", p, st.Mode().Type(), errdefs.ErrInvalidArgument)
	}
	// The guest takes no file over maxHostFile; say so here, naming it.
	if st.Size() > maxHostFile {
		return nil, 0, tooBig(p, st.Size())
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(*budget)+1))
	if err != nil {
		return nil, 0, err
	}
	if len(b) > *budget {
		return nil, 0, fmt.Errorf("%s: files copied into the guest exceed %d bytes in all; mount smaller volumes or fewer keys: %w", p, maxHostFiles, errdefs.ErrInvalidArgument)
	}
	*budget -= len(b)
	return b, uint32(st.Mode().Perm()), nil
}

// emptyDirKind is the kubelet's emptyDir plugin directory.
const emptyDirKind = "kubernetes.io~empty-dir"

// isEmptyDir says whether a bind mount source is a kubelet emptyDir:
// <kubelet root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>.
func isEmptyDir(source string) bool {
	dir, _ := path.Split(path.Clean(source))
	return path.Base(dir) == emptyDirKind && path.Base(path.Dir(path.Clean(dir))) == "volumes"
}

// isEmptyDirSubPath says whether source is the kubelet's bind mount of a
// subPath of an emptyDir: <root>/pods/<uid>/volume-subpaths/<vol>/<ctr>/<i>
// where <root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<vol> exists.
func isEmptyDirSubPath(source string) bool {
	p := path.Clean(source)
	vol := path.Dir(path.Dir(p))
	subpaths := path.Dir(vol)
	if path.Base(subpaths) != "volume-subpaths" {
		return false
	}
	fi, err := os.Stat(path.Join(path.Dir(subpaths), "volumes", emptyDirKind, path.Base(vol)))
	return err == nil && fi.IsDir()
}

// hostDirsMode is the class's [volumes] host_dirs, its default resolved:
// refuse with a TEE, an empty guest directory without.
func hostDirsMode(configured string, tee bool) string {
	if configured != "" {
		return configured
	}
	if tee {
		return "refuse"
	}
	return "empty"
}

// checkHostDirs refuses, in mode "refuse", every bind mount of a host
// directory whose content cannot reach the guest: anything but a kubelet
// file volume (copied), an emptyDir or a subPath of one (guest storage of
// the pod) and the pod's /dev/shm (the guest's). A confidential pod would
// otherwise get an empty directory where it expects its data.
func checkHostDirs(sp *specs.Spec, mode string) error {
	if mode != "refuse" {
		return nil
	}
	for _, m := range sp.Mounts {
		if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
			continue
		}
		if m.Destination == "/dev/shm" || isFileVolume(m.Source) || isEmptyDir(m.Source) || isEmptyDirSubPath(m.Source) || isImageVolume(m) {
			continue
		}
		fi, err := os.Stat(m.Source)
		if err != nil || !fi.IsDir() {
			continue // a file is copied; a missing source is the runtime's to report
		}
		return fmt.Errorf("mount %s: host directory %s (a hostPath or persistent volume) cannot be shared with a confidential pod, whose guest cannot see host files; "+
			"use a configMap, secret or emptyDir volume, or a runtime class whose [volumes] host_dirs = \"empty\" gives an empty guest directory instead: %w",
			m.Destination, m.Source, errdefs.ErrInvalidArgument)
	}
	return nil
}
