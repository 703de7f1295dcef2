package layout

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/guest-assets/agent/trust"
	"github.com/coco-runtime/coco/guest-assets/initrd"
)

// fakeAssets writes what `make kernel` would, with tiny files.
func fakeAssets(t *testing.T) (Inputs, string) {
	t.Helper()
	dir := t.TempDir()
	const rel = "6.1.0-test-amd64"
	write := func(p string, data string, mode os.FileMode) string {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		return full
	}
	write("kernel.release", rel+"\n", 0o644)
	write("modules/"+rel+"/kernel/net/vmw_vsock/vsock.ko", "\x7fELF vsock", 0o644)
	write("modules.manifest", "# order\n/lib/modules/"+rel+"/kernel/net/vmw_vsock/vsock.ko\n", 0o644)
	in := Inputs{
		Init:   write("coco-agent", "agent", 0o755),
		Crun:   write("crun", "crun", 0o755),
		Pause:  write("coco-pause", "pause", 0o755),
		Policy: write("coco-policy", "policy", 0o755),
		Assets: dir,
		Extra:  map[string]string{"/usr/bin/extra": write("extra", "extra", 0o700)},
	}
	return in, dir
}

func build(t *testing.T, in Inputs, compression string) []byte {
	t.Helper()
	entries, err := Entries(in)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := initrd.Write(&buf, entries, compression); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLayout(t *testing.T) {
	in, _ := fakeAssets(t)
	entries, err := Entries(in)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]initrd.Entry{}
	for _, e := range entries {
		got[e.Path] = e
	}
	for p, want := range map[string]string{
		"/init":                    "agent",
		"/usr/bin/crun":            "crun",
		"/usr/bin/coco-pause":      "pause",
		"/usr/bin/coco-policy":     "policy",
		"/usr/bin/extra":           "extra",
		"/etc/coco/kernel.release": "6.1.0-test-amd64\n",
		"/lib/modules/6.1.0-test-amd64/kernel/net/vmw_vsock/vsock.ko": "\x7fELF vsock",
	} {
		if string(got[p].Data) != want {
			t.Errorf("%s = %q, want %q", p, got[p].Data, want)
		}
	}
	if !strings.Contains(string(got[ModulesManifest].Data), "vsock.ko") {
		t.Errorf("manifest missing: %q", got[ModulesManifest].Data)
	}
	if c := got["/dev/console"]; c.Major != 5 || c.Minor != 1 {
		t.Errorf("/dev/console = %+v", c)
	}
	if m := got["/usr/bin/extra"].Mode.Perm(); m != 0o755 {
		t.Errorf("extra mode %v, want 0755", m)
	}
	if _, ok := got[TEEMarkerPath]; ok {
		t.Errorf("%s in an initrd not marked TEE", TEEMarkerPath)
	}
}

// Only a TEE initrd carries the marker that puts its agent in TEE mode.
func TestLayoutTEEMarker(t *testing.T) {
	in, _ := fakeAssets(t)
	in.TEE = true
	entries, err := Entries(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Path == TEEMarkerPath {
			if len(e.Data) == 0 || e.Mode.Perm() != 0o644 {
				t.Fatalf("marker %+v", e)
			}
			return
		}
	}
	t.Fatalf("%s missing from a TEE initrd", TEEMarkerPath)
}

func TestTEEMarkerIsWhereTheAgentLooks(t *testing.T) {
	if TEEMarkerPath != trust.MarkerPath {
		t.Fatalf("layout writes %s, the agent looks for %s", TEEMarkerPath, trust.MarkerPath)
	}
}

func TestLayoutErrors(t *testing.T) {
	in, dir := fakeAssets(t)
	in.Crun = filepath.Join(dir, "nope")
	if _, err := Entries(in); err == nil || !strings.Contains(err.Error(), "make crun") {
		t.Errorf("missing crun: %v", err)
	}
	in, dir = fakeAssets(t)
	os.Remove(filepath.Join(dir, "modules/6.1.0-test-amd64/kernel/net/vmw_vsock/vsock.ko"))
	if _, err := Entries(in); err == nil || !strings.Contains(err.Error(), "vsock.ko") {
		t.Errorf("stale manifest: %v", err)
	}
	in, dir = fakeAssets(t)
	os.Remove(filepath.Join(dir, "kernel.release"))
	if _, err := Entries(in); err == nil || !strings.Contains(err.Error(), "make kernel") {
		t.Errorf("missing kernel.release: %v", err)
	}
}

// TestReproducible builds the initrd twice from the same inputs and compares
// the bytes. It uses the real assets in build/guest when `make guest-assets`
// (or `make kernel crun`) made them, and tiny stand-ins otherwise.
func TestReproducible(t *testing.T) {
	in, _ := fakeAssets(t)
	real := filepath.Join("..", "..", "..", "build", "guest")
	if _, err := os.Stat(filepath.Join(real, "modules.manifest")); err == nil {
		// Real kernel modules; real agent and crun when built, stand-ins otherwise.
		in.Assets, in.Extra = real, nil
		for _, f := range []struct {
			dst  *string
			name string
		}{{&in.Init, "coco-agent"}, {&in.Crun, "crun"}, {&in.Pause, "coco-pause"}, {&in.Policy, "coco-policy"}} {
			if _, err := os.Stat(filepath.Join(real, f.name)); err == nil {
				*f.dst = filepath.Join(real, f.name)
			}
		}
	} else {
		t.Logf("build/guest has no kernel assets (make kernel): using stand-in files")
	}
	// The Makefile's compression; gzip's determinism is tested in package initrd.
	for _, comp := range []string{initrd.None} {
		a := build(t, in, comp)
		b := build(t, in, comp)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: two builds from the same inputs differ", comp)
		}
		t.Logf("initrd (%s, init=%s, crun=%q): %d bytes, sha256 %x", comp, filepath.Base(in.Init), in.Crun, len(a), sha256.Sum256(a))
	}
}

// A kernel with everything built in (GUEST_KERNEL=own) comes with an empty
// manifest and no modules directory: the initrd carries no module at all.
func TestLayoutBuiltinKernel(t *testing.T) {
	in, dir := fakeAssets(t)
	const rel = "6.12.118-coco"
	if err := os.RemoveAll(filepath.Join(dir, "modules")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel.release"), []byte(rel+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.manifest"), []byte("# "+rel+": everything built in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, err := Entries(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Path, "/lib/modules") {
			t.Errorf("initrd of a built-in kernel carries %s", e.Path)
		}
	}

	// A manifest that names a module still needs it on disk.
	if err := os.WriteFile(filepath.Join(dir, "modules.manifest"), []byte("/lib/modules/"+rel+"/kernel/vsock.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Entries(in); err == nil || !strings.Contains(err.Error(), "vsock.ko") {
		t.Errorf("manifest naming a missing module: err = %v, want one naming vsock.ko", err)
	}
}
