package vmcommand

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/configs"
)

func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestEveryShippedClass: each shipped runtime class prints a launch, with
// and without init-data; init-data is bound in SNP host-data / TDX
// mrconfigid (or CLH host_data), and said to be unbound elsewhere.
func TestEveryShippedClass(t *testing.T) {
	t.Setenv(configs.EnvShareDir, "/opt/coco/share")
	initFile := filepath.Join("testdata", "initdata.toml")
	for _, name := range configs.Names() {
		class := strings.TrimSuffix(strings.TrimPrefix(name, "configuration-"), ".toml")
		t.Run(class, func(t *testing.T) {
			code, out, errOut := runMain(t, "vm-command", "--class", class)
			clh := strings.HasPrefix(class, "clh-")
			if code != ExitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if clh {
				var body map[string]any
				if err := json.Unmarshal([]byte(out), &body); err != nil || body["payload"] == nil {
					t.Errorf("clh output is not a vm.create body: %v\n%s", err, out)
				}
			} else {
				if !strings.Contains(filepath.Base(lines[0]), "qemu-system-") {
					t.Errorf("first line %q is not a QEMU binary", lines[0])
				}
				for _, l := range lines {
					if strings.HasPrefix(l, "-") && strings.Contains(l, " ") {
						t.Errorf("argument %q holds a flag and its value: want one argument per line", l)
					}
				}
				if !strings.Contains(out, "/run/coco/"+DefaultID+"/vm/qmp.sock") {
					t.Errorf("paths do not follow the sandbox layout:\n%s", out)
				}
			}

			code, withID, errOut := runMain(t, "--class", class, "--initdata", initFile)
			if class == "clh-tdx" {
				// Upstream Cloud Hypervisor has no MRCONFIGID: refused, with the way out.
				if code == ExitOK || !strings.Contains(errOut, "no MRCONFIGID") || !strings.Contains(errOut, "QEMU TDX runtime class") {
					t.Fatalf("clh-tdx with init-data: exit %d, stderr %q; want a refusal naming MRCONFIGID and the QEMU class", code, errOut)
				}
				return
			}
			if code != ExitOK {
				t.Fatalf("with init-data: exit %d: %s", code, errOut)
			}
			switch {
			case strings.HasSuffix(class, "snp") && !clh:
				if !strings.Contains(withID, "host-data=") {
					t.Errorf("SNP launch lacks host-data:\n%s", withID)
				}
			case strings.HasSuffix(class, "snp") && clh:
				if !strings.Contains(withID, `"host_data"`) {
					t.Errorf("CLH SNP body lacks host_data:\n%s", withID)
				}
			case strings.HasSuffix(class, "tdx") && !clh:
				if !strings.Contains(withID, `"mrconfigid"`) {
					t.Errorf("TDX launch lacks mrconfigid:\n%s", withID)
				}
			default:
				if !strings.Contains(errOut, "note: ") || !strings.Contains(errOut, "not bound") {
					t.Errorf("init-data that cannot be bound must be noted; stderr:\n%s", errOut)
				}
			}
			if !strings.Contains(withID, "initdata.img") {
				t.Errorf("init-data disk not attached:\n%s", withID)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[hypervisor]\nmachine = \"pc\"\n"), 0o644)
	if code, _, errOut := runMain(t, "--config", bad); code != ExitFailed || !strings.Contains(errOut, "hypervisor.machine") {
		t.Errorf("bad machine: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runMain(t, "--class", "qemu-snp", "--initdata", filepath.Join(dir, "missing.toml")); code != ExitFailed || !strings.Contains(errOut, "missing.toml") {
		t.Errorf("missing init-data: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := runMain(t, "--class", "no-such-class"); code != ExitFailed || !strings.Contains(errOut, "no-such-class") {
		t.Errorf("unknown class: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := runMain(t, "--bogus"); code != ExitBadUsage {
		t.Errorf("unknown flag: exit %d, want %d", code, ExitBadUsage)
	}
	if code, _, _ := runMain(t, "--config", bad, "--class", "qemu-snp"); code != ExitBadUsage {
		t.Errorf("--config with --class: exit %d, want %d", code, ExitBadUsage)
	}
}
