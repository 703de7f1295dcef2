package vmcommand_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/sandbox"
	"github.com/coco-runtime/coco/shim/cli/measure"
	"github.com/coco-runtime/coco/shim/cli/vmcommand"
	"github.com/coco-runtime/coco/shim/pod"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

// amdSevFooter is the end of a real AmdSev OVMF build: enough for measure
// to find the SEV hashes page.
const amdSevFooter = "../../../virtcontainers/measure/testdata/sev-snp-measure/ovmf_AmdSev_suffix.bin"

// TestShimRunsWhatToolsShow: for every shipped runtime class (and a
// guest-pull variant with a scratch disk), with and without init-data, the
// VM the shim's sandbox would start is the one `vm-command` prints, and the
// boot inputs `measure --config` hashes are the ones in that launch.
func TestShimRunsWhatToolsShow(t *testing.T) {
	tmp := t.TempDir()
	share, bin, run := filepath.Join(tmp, "share"), filepath.Join(tmp, "bin"), filepath.Join(tmp, "run")
	fakeBinaries(t, bin)
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv(configs.EnvShareDir, share)
	t.Setenv(pod.RunDirEnv, run)
	raw, err := os.ReadFile(filepath.Join("testdata", "initdata.toml"))
	if err != nil {
		t.Fatal(err)
	}
	idFile, err := filepath.Abs(filepath.Join("testdata", "initdata.toml"))
	if err != nil {
		t.Fatal(err)
	}

	classes := map[string]string{} // name → config file
	for _, name := range configs.Names() {
		b, err := configs.Embedded(name)
		if err != nil {
			t.Fatal(err)
		}
		classes[strings.TrimSuffix(strings.TrimPrefix(name, "configuration-"), ".toml")] = writeFile(t, filepath.Join(tmp, name), b)
		if name == configs.DefaultName {
			pull := append(b, "\n[rootfs]\nguest_pull = true\nscratch_mib = 64\n"...)
			classes["qemu-coco-dev-guest-pull"] = writeFile(t, filepath.Join(tmp, "configuration-guest-pull.toml"), pull)
		}
	}
	for class, file := range classes {
		c, err := configs.Load(file)
		if err != nil {
			t.Fatalf("%s: %v", class, err)
		}
		for _, a := range c.Assets() {
			content := []byte("asset " + a.Key)
			if strings.HasSuffix(a.Path, "OVMF.amdsev.fd") {
				if content, err = os.ReadFile(amdSevFooter); err != nil {
					t.Fatal(err)
				}
			}
			writeFile(t, a.Path, content)
		}
		for _, withID := range []bool{false, true} {
			name := class
			if withID {
				name += "/initdata"
			}
			t.Run(name, func(t *testing.T) {
				c, err := configs.Load(file)
				if err != nil {
					t.Fatal(err)
				}
				opts := sandbox.Options{ID: vmcommand.DefaultID, Config: c, StateDir: pod.StateDir(run, vmcommand.DefaultID)}
				args := []string{"--config", file}
				if withID {
					opts.Annotations = map[string]string{initdata.AnnotationKey: initdata.Encode(raw)}
					args = append(args, "--initdata", idFile)
				}
				var out, errOut bytes.Buffer
				code := vmcommand.Main(context.Background(), args, &out, &errOut)
				if withID && class == "clh-tdx" {
					// Cloud Hypervisor has no MRCONFIGID: both refuse the pod.
					_, err := sandbox.New(context.Background(), opts)
					if err == nil || code == vmcommand.ExitOK || !strings.Contains(err.Error(), "MRCONFIGID") {
						t.Fatalf("clh-tdx with init-data: shim %v, vm-command exit %d; want both to refuse", err, code)
					}
					return
				}
				if code != vmcommand.ExitOK {
					t.Fatalf("vm-command: exit %d: %s", code, errOut.String())
				}
				shim := shimCommand(t, opts)
				if printed := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); !slices.Equal(shim, printed) {
					t.Fatalf("the shim would launch\n%s\nvm-command prints\n%s", strings.Join(shim, "\n"), out.String())
				}
				if strings.HasSuffix(class, "guest-pull") && !strings.Contains(out.String(), "scratch.img") {
					t.Errorf("guest-pull class without its scratch disk:\n%s", out.String())
				}

				out.Reset()
				errOut.Reset()
				if code := measure.Main(context.Background(), args, &out, &errOut); code != 0 {
					t.Fatalf("measure: exit %d: %s", code, errOut.String())
				}
				var rep measure.Report
				if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.Launch == nil {
					t.Fatalf("measure report: %v\n%s", err, out.String())
				}
				want, err := measure.ReadLaunch(c.Hypervisor.Driver, shim)
				if err != nil {
					t.Fatal(err)
				}
				got := *rep.Launch
				got.Mode, got.KernelHashes, got.VCPUSig, got.VMMType, got.GuestFeatures = "", false, "", "", ""
				if got != *want {
					t.Fatalf("measure hashes %+v, the shim launches %+v", got, want)
				}
			})
		}
	}
}

// shimCommand is the launch of the VM the shim's sandbox holds (it writes
// the init-data and scratch images, and starts nothing).
func shimCommand(t *testing.T, opts sandbox.Options) []string {
	t.Helper()
	t.Cleanup(func() { os.RemoveAll(opts.StateDir) })
	sb, err := sandbox.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("sandbox.New: %v", err)
	}
	c, ok := sb.(hypervisor.Commander)
	if !ok {
		t.Fatalf("sandbox %T cannot show its command", sb)
	}
	lines, _, err := c.Command()
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// fakeBinaries puts every VMM and helper a class may name into dir: the
// shim's driver checks they exist, and nothing here runs them.
func fakeBinaries(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"qemu-system-x86_64", "qemu-system-s390x", "qemu-system-ppc64", "cloud-hypervisor", "vhost-device-vsock", "mkfs.erofs"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
