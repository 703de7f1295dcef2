// Package image is `containerd-shim-coco-v2 image`: it execs coco-image
// (package tool below), which encrypts and signs images for guest pull.
// The shim links this package, so it must import nothing beyond the
// standard library (see Exec).
package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Tool is the binary that implements `containerd-shim-coco-v2 image`.
const Tool = "coco-image"

// Exec runs `image ARGS` by replacing the process with coco-image, found next
// to the shim's executable or on PATH. Linking the registry client, ocicrypt
// and the signing code into the shim would add ~2 MiB to the resident memory
// of every shim start (measured with `--help`), for a command users run on a
// workstation.
func Exec(_ context.Context, args []string, _, stderr io.Writer) int {
	path := ""
	if self, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(self), Tool); isExec(p) {
			path = p
		}
	}
	if path == "" {
		p, err := exec.LookPath(Tool)
		if err != nil {
			fmt.Fprintf(stderr, "image: %s is not installed next to the shim or on PATH (make image-tool install)\n", Tool)
			return 1
		}
		path = p
	}
	err := syscall.Exec(path, append([]string{Tool}, args...), os.Environ())
	fmt.Fprintf(stderr, "image: exec %s: %v\n", path, err)
	return 1
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
