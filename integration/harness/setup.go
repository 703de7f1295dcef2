//go:build integration

package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// GuestDir is where `make guest-assets` leaves the guest kernel and initrd;
// the harness points the shim at it with COCO_SHARE_DIR.
func GuestDir(repo string) string { return filepath.Join(repo, "build", "guest") }

// CheckGuestAssets says what is missing from dir and how to make it.
func CheckGuestAssets(dir string) error {
	var missing []string
	for _, f := range []string{"vmlinux", "initrd.img", "initrd-dev.img", "tools.erofs", "kernel.release"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			missing = append(missing, filepath.Join(dir, f))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("guest assets missing (%s): run `make guest-assets`", strings.Join(missing, ", "))
	}
	return nil
}

// StandardHandlers are the handlers of `make dev-containerd` and the tests:
// coco and coco-sandboxer on the coco-dev config, and the runc baseline.
func StandardHandlers(repo string) []Handler {
	return []Handler{
		RuncHandler(),
		CocoHandler("coco", CocoDevConfig(repo), ""),
		CocoHandler("coco-sandboxer", CocoDevConfig(repo), "shim"),
	}
}

// ParseCRILog returns the text of a CRI log file ("<time> <stream> <tag>
// <text>" per line), lines joined by newlines, partial lines (tag P) merged.
func ParseCRILog(data []byte) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		parts := strings.SplitN(line, " ", 4)
		if len(parts) < 3 {
			continue
		}
		text := ""
		if len(parts) == 4 {
			text = parts[3]
		}
		b.WriteString(text)
		if parts[2] != "P" {
			b.WriteByte('\n')
		}
	}
	return b.String()
}
