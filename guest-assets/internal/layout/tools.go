package layout

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/coco-runtime/coco/guest-assets/agent/policyproc"
)

// ToolsFiles are the files of a tools disk (hypervisor.tools_image): the
// large binaries the agent runs only once a container or a policy needs
// them, at the image's root under the names the agent runs them by (its
// PATH ends with the disk's mount point). An initrd built for such a disk
// leaves them out.
func ToolsFiles(in Inputs) map[string]string {
	return map[string]string{"crun": in.Crun, policyproc.Name: in.Policy}
}

// WriteToolsImage writes ToolsFiles(in) to out as a read-only EROFS image
// with mkfs (mkfs.erofs from erofs-utils), reproducibly: files owned by
// root, mode 0755, timestamp 0, a fixed UUID, no xattrs.
func WriteToolsImage(in Inputs, mkfs, out string) error {
	stage, err := os.MkdirTemp(filepath.Dir(out), ".tools-stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	files := ToolsFiles(in)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if files[n] == "" {
			return fmt.Errorf("layout: tools image: no host file for %s", n)
		}
		if err := copyFile(files[n], filepath.Join(stage, "root", n)); err != nil {
			return fmt.Errorf("layout: tools image: %w (run `make crun coco-policy`)", err)
		}
	}
	tmp := filepath.Join(stage, "image")
	cmd := exec.Command(mkfs, "--quiet", "-T0", "-U", "00000000-0000-0000-0000-000000000000", "--all-root", "-x-1", tmp, filepath.Join(stage, "root"))
	if b, err := cmd.CombinedOutput(); err != nil {
		if _, lerr := exec.LookPath(mkfs); lerr != nil {
			return fmt.Errorf("layout: tools image: %s not found: install erofs-utils (scripts/install-deps.sh)", mkfs)
		}
		return fmt.Errorf("layout: tools image: %s: %w: %s", mkfs, err, strings.TrimSpace(string(b)))
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, 0o755) // not filtered by the umask
}
