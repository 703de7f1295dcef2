//go:build integration

package harness

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// The rendered config must be TOML containerd can read, with the handler
// tables where containerd 2.x looks for them.
func TestRenderConfig(t *testing.T) {
	handlers := []Handler{RuncHandler(), CocoHandler("coco", "/x/coco.toml", ""), CocoHandler("coco-sandboxer", "/x/coco.toml", "shim")}
	text := renderConfig("/r", PauseImage, handlers, network{})
	var cfg map[string]any
	if _, err := toml.Decode(text, &cfg); err != nil {
		t.Fatalf("config is not TOML: %v\n%s", err, text)
	}
	plugins := cfg["plugins"].(map[string]any)
	rt := plugins["io.containerd.cri.v1.runtime"].(map[string]any)
	if rt["restrict_oom_score_adj"] != true {
		t.Errorf("restrict_oom_score_adj not set")
	}
	runtimes := rt["containerd"].(map[string]any)["runtimes"].(map[string]any)
	sb := runtimes["coco-sandboxer"].(map[string]any)
	if sb["runtime_type"] != "io.containerd.coco.v2" || sb["sandboxer"] != "shim" {
		t.Errorf("coco-sandboxer = %v", sb)
	}
	if got := sb["options"].(map[string]any)["ConfigPath"]; got != "/x/coco.toml" {
		t.Errorf("ConfigPath = %v", got)
	}
	if _, ok := runtimes["coco"].(map[string]any)["sandboxer"]; ok {
		t.Errorf("coco must use containerd's default (podsandbox) sandboxer")
	}
	pinned := plugins["io.containerd.cri.v1.images"].(map[string]any)["pinned_images"].(map[string]any)
	if pinned["sandbox"] != PauseImage {
		t.Errorf("sandbox image = %v", pinned["sandbox"])
	}
}

// The archive must be a self-consistent OCI layout whose busybox applets are
// symlinks (hard links with mode 0 unpack unreadable on these machines).
func TestBusyboxArchive(t *testing.T) {
	files, err := busyboxFiles("/bin/busybox")
	if err != nil {
		t.Skip(err)
	}
	dst := filepath.Join(t.TempDir(), "bb.tar")
	if err := writeImageArchive(dst, BusyboxImage, files, imageConfig{Cmd: []string{"sh"}}); err != nil {
		t.Fatal(err)
	}
	blobs := readTar(t, dst)
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	mustJSON(t, blobs["index.json"], &index)
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != BusyboxImage {
		t.Fatalf("index = %+v", index)
	}
	var manifest struct {
		Layers []struct{ Digest string }
	}
	mustJSON(t, blobs[blob(index.Manifests[0].Digest)], &manifest)
	layer := blobs[blob(manifest.Layers[0].Digest)]
	if digest(layer) != manifest.Layers[0].Digest {
		t.Fatalf("layer digest mismatch")
	}
	entries := readTarBytes(t, layer)
	sh, ok := entries["bin/sh"]
	if !ok || sh.Typeflag != tar.TypeSymlink || sh.Linkname != "/bin/busybox" {
		t.Fatalf("bin/sh = %+v, want a symlink to /bin/busybox", sh)
	}
	if bb := entries["bin/busybox"]; bb == nil || bb.Mode&0o555 != 0o555 {
		t.Fatalf("bin/busybox missing or not readable+executable: %+v", bb)
	}
}

func TestParseCRILog(t *testing.T) {
	in := "2026-01-01T00:00:00Z stdout P hel\n2026-01-01T00:00:00Z stdout F lo\n2026-01-01T00:00:01Z stderr F x: y\n"
	if got, want := ParseCRILog([]byte(in)), "hello\nx: y\n"; got != want {
		t.Fatalf("ParseCRILog = %q, want %q", got, want)
	}
}

func blob(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}

func readTarBytes(t *testing.T, b []byte) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}
