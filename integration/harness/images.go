//go:build integration

package harness

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"time"
)

// Images the harness builds and imports into the k8s.io namespace.
const (
	BusyboxImage = "localhost/coco-test/busybox:latest"
	PauseImage   = "localhost/coco-test/pause:latest"
)

// file is one entry of an image layer.
type file struct {
	Name     string // path inside the image, no leading slash
	Mode     int64
	Data     []byte // regular files
	Linkname string // symlinks
	Dir      bool
}

// imageConfig is the part of the OCI image config the tests use.
type imageConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
}

// busyboxFiles lays out Debian's static busybox with one symlink per applet.
// Symlinks, not hard links: a hard link written with mode 0 in a layer tar
// unpacks as an unreadable file on these machines.
func busyboxFiles(bin string) ([]file, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("harness: busybox image needs %s (Debian busybox-static, scripts/install-deps.sh): %w", bin, err)
	}
	out, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("harness: %s --list-full: %w", bin, err)
	}
	files := []file{{Name: "bin/busybox", Mode: 0o755, Data: data}}
	for _, dir := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root", "var"} {
		files = append(files, file{Name: dir, Mode: 0o755, Dir: true})
	}
	for _, applet := range strings.Fields(string(out)) {
		applet = strings.TrimPrefix(applet, "/")
		if applet == "bin/busybox" {
			continue
		}
		files = append(files, file{Name: applet, Mode: 0o777, Linkname: "/bin/busybox"})
	}
	files = append(files,
		file{Name: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		file{Name: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	)
	return files, nil
}

// writeImageArchive writes a one-layer OCI image layout as a tar archive that
// `ctr images import` accepts, named by io.containerd.image.name.
func writeImageArchive(dst, name string, files []file, cfg imageConfig) error {
	layer, err := layerTar(files)
	if err != nil {
		return err
	}
	layerDigest := digest(layer)
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": cfg.Entrypoint, "Cmd": cfg.Cmd, "Env": cfg.Env},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar", layer)},
	})
	if err != nil {
		return err
	}
	md := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": name[strings.LastIndex(name, ":")+1:],
	}
	md["platform"] = map[string]string{"architecture": "amd64", "os": "linux"}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{md},
	})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(config), config},
		{blobPath(manifest), manifest},
		{blobPath(layer), layer},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), 0o644)
}

// layerTar is deterministic: sorted names, fixed times and owners, so the same
// inputs give the same image digest.
func layerTar(files []file) ([]byte, error) {
	sorted := append([]file(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	seen := map[string]bool{}
	for _, f := range sorted {
		if seen[f.Name] {
			continue
		}
		seen[f.Name] = true
		h := &tar.Header{Name: f.Name, Mode: f.Mode, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, f.Name+"/"
		case f.Linkname != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Linkname
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("harness: layer entry %s: %w", f.Name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func digest(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

func blobPath(b []byte) string {
	return path.Join("blobs", "sha256", strings.TrimPrefix(digest(b), "sha256:"))
}

func descriptor(mediaType string, b []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest(b), "size": len(b)}
}

// BusyboxLayer is the test busybox image's layer (an uncompressed tar),
// with extra regular files (path inside the image → content) added, for
// tests that build images of their own (e.g. to push to a test registry).
func BusyboxLayer(extra map[string]string) ([]byte, error) {
	files, err := busyboxFiles("/bin/busybox")
	if err != nil {
		return nil, err
	}
	for name, content := range extra {
		files = append(files, file{Name: name, Mode: 0o644, Data: []byte(content)})
	}
	return layerTar(files)
}
