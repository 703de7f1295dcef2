//go:build linux

package trust

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A host can change the kernel command line and hide devices; neither may
// take a guest whose measured initrd says TEE out of TEE mode.
func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   []string
		cmdline string
		tee     bool
		why     string
	}{
		{name: "plain VM", cmdline: "console=ttyS0 panic=1"},
		{name: "marker", files: []string{MarkerPath}, tee: true, why: MarkerPath},
		{name: "host says none on a TEE initrd", files: []string{MarkerPath}, cmdline: "coco.tee=none", tee: true, why: MarkerPath},
		{name: "host says none, no marker", cmdline: "coco.tee=none"},
		{name: "kernel parameter makes stricter", cmdline: "quiet coco.tee=snp", tee: true, why: "coco.tee=snp"},
		{name: "device makes stricter", files: []string{"/dev/sev-guest"}, tee: true, why: "/dev/sev-guest"},
		{name: "configfs-tsm without a provider", files: []string{"/sys/kernel/config/tsm/report/.keep"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				p := filepath.Join(root, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m := Detect(root, tc.cmdline)
			if m.TEE != tc.tee || !strings.Contains(m.Why, tc.why) {
				t.Fatalf("Detect = %+v, want TEE %v because of %q", m, tc.tee, tc.why)
			}
		})
	}
}

// A marker that cannot be read is not proof of its absence.
func TestDetectUnreadableMarkerFailsClosed(t *testing.T) {
	root := t.TempDir()
	// A file where /etc should be: stat of the marker fails with ENOTDIR.
	if err := os.WriteFile(filepath.Join(root, "etc"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m := Detect(root, "")
	if !m.TEE {
		t.Fatalf("Detect = %+v, want TEE", m)
	}
}
