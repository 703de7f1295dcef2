package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/agent/cdh"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// The kubelet's atomic writer keeps a volume's files in a hidden
// directory ..<timestamp>, points the link ..data at it and makes each
// top-level name a link through ..data; an update writes a new directory
// and renames a new link over ..data, so a reader sees the old version or
// the new one, never a mix. Apps (and libraries that reload config) watch
// for that flip, so the guest copy keeps the same layout.
const (
	atomicData    = "..data"
	atomicDataTmp = "..data_tmp"
)

// volumeRelPath checks a file's path inside a volume: no element may start
// with ".." (the writer's own names), as the kubelet's writer requires.
func volumeRelPath(field, rel string) error {
	for el := range strings.SplitSeq(rel, "/") {
		if strings.HasPrefix(el, "..") {
			return fmt.Errorf("%s: %q: a volume's file names may not start with \"..\" (the atomic writer's own): %w", field, rel, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// newVersionDir makes a fresh ..<timestamp> directory in root and returns
// its name.
func newVersionDir(root *os.Root) (string, error) {
	base := ".." + time.Now().UTC().Format("2006_01_02_15_04_05.000000000")
	for i := 0; i < 100; i++ {
		name := base
		if i > 0 {
			name = fmt.Sprintf("%s_%d", base, i)
		}
		err := root.Mkdir(name, 0o755)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("no free version directory name: %w", errdefs.ErrAlreadyExists)
}

// flipData points ..data at version (a new link renamed over the old one),
// makes a top-level link for each name in top and removes the links of
// names no longer there, and the previous version. Everything goes through
// root, so a link the container planted (a writable mount) leads nowhere
// outside the volume.
func flipData(root *os.Root, version string, top []string) error {
	old, _ := root.Readlink(atomicData)
	_ = root.Remove(atomicDataTmp)
	if err := root.Symlink(version, atomicDataTmp); err != nil {
		return err
	}
	if err := root.Rename(atomicDataTmp, atomicData); err != nil {
		return err
	}
	for _, name := range top {
		if t, err := root.Readlink(name); err == nil && t == path.Join(atomicData, name) {
			continue
		}
		if err := root.Symlink(path.Join(atomicData, name), name); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
	}
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		if strings.HasPrefix(name, "..") || slices.Contains(top, name) {
			continue
		}
		if t, err := root.Readlink(name); err == nil && strings.HasPrefix(t, atomicData+"/") {
			_ = root.Remove(name)
		}
	}
	if old != "" && old != version && strings.HasPrefix(old, "..") && !strings.Contains(old, "/") {
		_ = root.RemoveAll(old)
	}
	return nil
}

// toAtomicLayout turns dir, where writeFiles put a volume's files, into the
// atomic writer's layout: its entries move into a version directory.
func toAtomicLayout(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := volumeRelPath("files", name); err != nil {
			return err
		}
	}
	version, err := newVersionDir(root)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := root.Rename(name, path.Join(version, name)); err != nil {
			return err
		}
	}
	return flipData(root, version, names)
}

// UpdateVolume replaces the files of the directory volume that
// PrepareContainer copied into container id at dest: the new version is
// written (sealed secrets unsealed, as at creation) before ..data flips to
// it. r is validated (api.UpdateVolumeRequest.Validate); dest must be one
// of the container's file volumes.
func (m *Manager) UpdateVolume(ctx context.Context, r *api.UpdateVolumeRequest) error {
	id, dest := r.GetContainerId(), r.GetDestination()
	m.mu.Lock()
	p := m.containers[id]
	var dir string
	ok := false
	if p != nil {
		dir, ok = p.volumes[dest]
	}
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if !ok {
		return fmt.Errorf("destination %q: container %s has no file volume (configMap, secret, projected, downwardAPI) there: %w", dest, id, errdefs.ErrNotFound)
	}
	p.volMu.Lock()
	defer p.volMu.Unlock()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("volume %s: %w", dest, err)
	}
	defer root.Close()
	var top []string
	for i, f := range r.GetFiles() {
		rel := strings.TrimPrefix(f.GetDestination(), dest+"/")
		if err := volumeRelPath(fmt.Sprintf("files[%d].destination", i), rel); err != nil {
			return err
		}
		first, _, _ := strings.Cut(rel, "/")
		if !slices.Contains(top, first) {
			top = append(top, first)
		}
	}
	version, err := newVersionDir(root)
	if err != nil {
		return fmt.Errorf("volume %s: %w", dest, err)
	}
	done := false
	defer func() {
		if !done {
			_ = root.RemoveAll(version)
		}
	}()
	written := make(map[string]string, len(r.GetFiles()))
	for i, f := range r.GetFiles() {
		rel := path.Join(version, strings.TrimPrefix(f.GetDestination(), dest+"/"))
		if err := writeRootFile(root, rel, f); err != nil {
			return fmt.Errorf("volume %s: files[%d] %q: %w", dest, i, f.GetDestination(), err)
		}
		written[f.GetDestination()] = filepath.Join(dir, rel)
	}
	if err := cdh.UnsealFiles(ctx, written, m.cfg.Unseal); err != nil {
		return fmt.Errorf("container %s volume %s: %w", id, dest, err)
	}
	if err := flipData(root, version, top); err != nil {
		return fmt.Errorf("volume %s: %w", dest, err)
	}
	done = true
	return nil
}

// writeRootFile writes one file of a new version inside root; O_EXCL
// refuses a path given twice or one under another file.
func writeRootFile(root *os.Root, rel string, f *api.File) error {
	if err := root.MkdirAll(path.Dir(rel), 0o755); err != nil {
		return fmt.Errorf("lies under another file: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	mode := os.FileMode(f.GetMode() & 0o777)
	if mode == 0 {
		mode = 0o644
	}
	w, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("clashes with another file: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	_, err = w.Write(f.GetContent())
	if cerr := w.Chmod(mode); err == nil {
		err = cerr
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadTerminationMessage returns at most api.MaxTerminationMessage bytes
// of the file container id's process wrote at dest. Only a single-file
// mount the host sent empty (a termination log: the kubelet creates it
// empty) may be read back: a file that came with content (a secret,
// perhaps unsealed here) never leaves the guest this way.
func (m *Manager) ReadTerminationMessage(id, dest string) ([]byte, error) {
	m.mu.Lock()
	p := m.containers[id]
	var file string
	ok := false
	if p != nil {
		file, ok = p.emptyFiles[dest]
	}
	m.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if !ok {
		return nil, fmt.Errorf("destination %q: not a file the host sent empty for container %s (only a termination message file can be read back): %w", dest, id, errdefs.ErrPermissionDenied)
	}
	f, err := os.OpenFile(file, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("termination message %s: %w", dest, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("termination message %s is not a regular file: %w", dest, errdefs.ErrFailedPrecondition)
	}
	return io.ReadAll(io.LimitReader(f, api.MaxTerminationMessage))
}

// fileVolumes lays out each directory mount served by the host's files
// (dirs: their destinations) as the atomic writer does, and returns them
// and the single-file mounts the host sent empty.
func fileVolumes(filesRoot string, files []*api.File, dirs []string) (volumes, empty map[string]string, err error) {
	for _, d := range dirs {
		dir := filepath.Join(filesRoot, d)
		if err := toAtomicLayout(dir); err != nil {
			return nil, nil, fmt.Errorf("volume %s: %w", d, err)
		}
		if volumes == nil {
			volumes = map[string]string{}
		}
		volumes[d] = dir
	}
	for _, f := range files {
		if len(f.GetContent()) > 0 || slices.ContainsFunc(dirs, func(d string) bool { return strings.HasPrefix(f.GetDestination(), d+"/") }) {
			continue
		}
		if empty == nil {
			empty = map[string]string{}
		}
		empty[f.GetDestination()] = filepath.Join(filesRoot, f.GetDestination())
	}
	return volumes, empty, nil
}
