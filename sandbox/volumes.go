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
