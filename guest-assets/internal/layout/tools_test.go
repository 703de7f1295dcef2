package layout

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tools image is byte-for-byte reproducible, and refuses missing inputs
// with the make target that builds them.
func TestWriteToolsImage(t *testing.T) {
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Skip("mkfs.erofs not installed (erofs-utils; scripts/install-deps.sh installs it): cannot check the tools image")
	}
	dir := t.TempDir()
	crun, pol := filepath.Join(dir, "crun-bin"), filepath.Join(dir, "policy-bin")
	os.WriteFile(crun, bytes.Repeat([]byte("r"), 10000), 0o700)
	os.WriteFile(pol, bytes.Repeat([]byte("p"), 5000), 0o600)
	in := Inputs{Crun: crun, Policy: pol}
	var images [][]byte
	for i := range 2 {
		out := filepath.Join(dir, "tools.erofs")
		if err := WriteToolsImage(in, "mkfs.erofs", out); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, b)
		if i == 0 { // a later build must not depend on file times
			old := time.Unix(1, 0)
			os.Chtimes(crun, old, old)
		}
	}
	if !bytes.Equal(images[0], images[1]) {
		t.Error("two builds of the tools image differ")
	}
	// Both files are in the image, by the names the agent runs.
	for _, name := range []string{"crun", "coco-policy"} {
		if !bytes.Contains(images[0], []byte(name)) {
			t.Errorf("image lacks %s", name)
		}
	}
	err := WriteToolsImage(Inputs{Crun: filepath.Join(dir, "nope"), Policy: pol}, "mkfs.erofs", filepath.Join(dir, "x.erofs"))
	if err == nil || !strings.Contains(err.Error(), "make crun") {
		t.Errorf("missing crun: %v", err)
	}
}
