package vmplan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor/driver"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

const doc = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = \"x\"\n"

func class(t *testing.T, extra string) *configs.Config {
	t.Helper()
	b, err := configs.Embedded("configuration-qemu-snp.toml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "configuration-test.toml")
	if err := os.WriteFile(path, append(b, extra...), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The pod's annotation is host input: refused unless the class allows it,
// and checked before anything is written.
func TestInitDataAnnotationIsChecked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pod")
	key := initdata.AnnotationKey
	strict := class(t, "\n[runtime]\nannotations_allowed = []\n")
	if _, err := New(strict, Pod{ID: "p", Dir: dir, Annotations: map[string]string{key: initdata.Encode([]byte(doc))}}); !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "annotations_allowed") {
		t.Fatalf("annotation not allowed: %v", err)
	}
	open := class(t, "")
	for _, bad := range []string{"", "not base64!", initdata.Encode([]byte("version = 1"))} {
		if _, err := New(open, Pod{ID: "p", Dir: dir, Annotations: map[string]string{key: bad}}); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("annotation %q: %v; want an error naming it", bad, err)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused plan left %s behind", dir)
	}
	if _, err := New(open, Pod{ID: "p", Dir: "relative"}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("relative dir: %v", err)
	}
}

// Create writes exactly the disks the plan attaches, where it says.
func TestCreateWritesTheAttachedDisks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pod")
	c := class(t, "\n[rootfs]\nguest_pull = true\nscratch_mib = 3\n")
	p, err := New(c, Pod{ID: "p", Dir: dir, Annotations: map[string]string{initdata.AnnotationKey: initdata.Encode([]byte(doc))}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.VM.LaunchData) != 32 || p.InitData == nil || p.InitData.Source != "annotation "+initdata.AnnotationKey {
		t.Fatalf("init-data not bound: %+v", p.InitData)
	}
	made, err := p.Create()
	if err != nil || !made {
		t.Fatalf("Create: %v, %v", made, err)
	}
	disks := map[string]string{}
	for _, d := range p.VM.Disks {
		disks[d.ID] = d.Path
	}
	img, err := os.ReadFile(disks[api.InitDataDiskSerial])
	if err != nil || len(img)%512 != 0 {
		t.Fatalf("init-data image: %v (%d bytes)", err, len(img))
	}
	if fi, err := os.Stat(disks[api.ScratchDiskSerial]); err != nil || fi.Size() != 3<<20 {
		t.Fatalf("scratch disk: %v", err)
	}
	if p.VM.StateDir != filepath.Join(dir, VMDir) {
		t.Fatalf("VM state dir %s", p.VM.StateDir)
	}
	// A second pod in the same directory must not reuse the scratch disk.
	if _, err := p.Create(); err == nil {
		t.Fatal("Create over an existing scratch disk succeeded")
	}
}

// Every driver the configuration accepts is in the driver table.
func TestEveryConfiguredDriverExists(t *testing.T) {
	for _, name := range []string{"qemu", "clh"} {
		body := "[hypervisor]\ndriver = \"" + name + "\"\n"
		path := filepath.Join(t.TempDir(), "c.toml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := configs.Load(path); err != nil {
			t.Fatalf("driver %s: %v", name, err)
		}
		if _, err := driver.Get(name); err != nil {
			t.Fatal(err)
		}
	}
	if got := driver.Names(); len(got) != 2 {
		t.Fatalf("driver table %v: update configs' drivers() and this test", got)
	}
}
