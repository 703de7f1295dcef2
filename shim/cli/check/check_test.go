package check

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/configs"
)

const objectHelpSNP = "List of user creatable objects:\n  sev-guest\n  sev-snp-guest\n"

// fakeHost answers from maps: bins maps a name to its path, outputs maps
// the first argument (-version, -object, --version) to the output.
func fakeHost(root string, bins map[string]string, probeErr error, outputs map[string]string) (host, *int) {
	probes := new(int)
	return host{
		root: root,
		lookPath: func(name string) (string, error) {
			if p, ok := bins[name]; ok {
				return p, nil
			}
			for _, p := range bins {
				if p == name {
					return p, nil
				}
			}
			return "", exec.ErrNotFound
		},
		probe: func(context.Context, string) error {
			*probes++
			return probeErr
		},
		output: func(_ context.Context, _ string, args ...string) (string, error) {
			return outputs[args[0]], nil
		},
	}, probes
}

// shareDir makes the guest files the class refers to and points
// COCO_SHARE_DIR at them.
func shareDir(t *testing.T, files ...string) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		body := []byte(f)
		if f == "OVMF.amdsev.fd" {
			// Loading an SEV/SNP class checks that this is the AmdSev build
			// of OVMF: use the footer of a real one.
			b, err := os.ReadFile("../../../virtcontainers/measure/testdata/sev-snp-measure/ovmf_AmdSev_suffix.bin")
			if err != nil {
				t.Fatal(err)
			}
			body = b
		}
		if f == "initrd.img" {
			// The TEE guest's initrd carries the TEE marker.
			body = []byte("070701" + teeMarkerName)
		}
		if err := os.WriteFile(filepath.Join(dir, f), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(configs.EnvShareDir, dir)
}

func class(t *testing.T, name string) *configs.Config {
	t.Helper()
	c, err := configs.LoadEmbedded("configuration-" + name + ".toml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func runCheck(t *testing.T, h host, cfg *configs.Config) (string, int) {
	t.Helper()
	var out bytes.Buffer
	rc := report(&out, cfg, h.check(context.Background(), cfg))
	return out.String(), rc
}

func line(t *testing.T, out, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("no line starting %q in:\n%s", prefix, out)
	return ""
}

var qemuBins = map[string]string{
	"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64",
	"vhost-device-vsock": "/usr/bin/vhost-device-vsock",
	"mkfs.erofs":         "/usr/bin/mkfs.erofs",
}

var qemuOut = map[string]string{"-version": "QEMU emulator version 10.0.2 (Debian)\n", "-object": objectHelpSNP}

// The example: an SNP class on a host without SNP cannot run.
func TestSNPClassOnHostWithoutSNP(t *testing.T) {
	shareDir(t, "vmlinuz", "initrd.img", "OVMF.amdsev.fd")
	h, _ := fakeHost(fakeRoot(t, map[string]string{"dev/kvm": "", "dev/sev": ""}), qemuBins, nil, qemuOut)
	out, rc := runCheck(t, h, class(t, "qemu-snp"))
	if rc != ExitCannot {
		t.Fatalf("rc = %d\n%s", rc, out)
	}
	l := line(t, out, "FAIL  tee-snp")
	if !strings.Contains(l, "sev_snp absent") || !strings.Contains(l, "fix: ") || !strings.Contains(l, "kvm_amd") {
		t.Errorf("tee line: %s", l)
	}
	if !strings.Contains(out, "runtime class qemu-snp cannot run on this host: 1 problem(s)") {
		t.Errorf("summary:\n%s", out)
	}
}

// The same class on a host that has everything can run, and every asset
// line carries its sha256.
func TestSNPClassOnSNPHost(t *testing.T) {
	shareDir(t, "vmlinuz", "initrd.img", "OVMF.amdsev.fd")
	root := fakeRoot(t, map[string]string{"dev/kvm": "", "dev/sev": "", "sys/module/kvm_amd/parameters/sev_snp": "Y\n"})
	h, probes := fakeHost(root, qemuBins, nil, qemuOut)
	out, rc := runCheck(t, h, class(t, "qemu-snp"))
	if rc != ExitOK {
		t.Fatalf("rc = %d\n%s", rc, out)
	}
	if *probes != 1 {
		t.Errorf("KVM probed %d times", *probes)
	}
	line(t, out, "ok    tee-snp")
	line(t, out, "ok    kvm ")
	line(t, out, "ok    qemu-tee")
	if n := strings.Count(out, "sha256:"); n != 3 {
		t.Errorf("%d asset hashes, want 3:\n%s", n, out)
	}
	// shareDir writes each file's name as its content.
	sum := sha256.Sum256([]byte("vmlinuz"))
	if !strings.Contains(out, "vmlinuz sha256:"+hex.EncodeToString(sum[:])+" (7 bytes)") {
		t.Errorf("kernel hash missing:\n%s", out)
	}
}

// coco-dev only warns when KVM does not work: TCG takes over.
func TestCocoDevWithoutKVM(t *testing.T) {
	shareDir(t, "vmlinux", "initrd-dev.img", "tools.erofs")
	h, _ := fakeHost(fakeRoot(t, map[string]string{"dev/kvm": ""}), qemuBins, errors.New("probe guest hung"), qemuOut)
	out, rc := runCheck(t, h, class(t, "qemu-coco-dev"))
	if rc != ExitOK {
		t.Fatalf("rc = %d\n%s", rc, out)
	}
	l := line(t, out, "warn  kvm")
	if !strings.Contains(l, "probe guest hung") || !strings.Contains(l, "TCG") {
		t.Errorf("kvm line: %s", l)
	}
	line(t, out, "ok    vsock      vhost-user vsock served by the shim")
}

// A TEE class fails when QEMU lacks its object, and when KVM does not work.
func TestTDXNeedsQEMUObjectAndKVM(t *testing.T) {
	shareDir(t, "vmlinuz", "initrd.img", "OVMF.inteltdx.fd")
	root := fakeRoot(t, map[string]string{"dev/kvm": "", "sys/module/kvm_intel/parameters/tdx": "Y"})
	h, _ := fakeHost(root, qemuBins, errors.New("hung"), qemuOut)
	out, rc := runCheck(t, h, class(t, "qemu-tdx"))
	if rc != ExitCannot {
		t.Fatalf("rc = %d\n%s", rc, out)
	}
	if l := line(t, out, "FAIL  qemu-tee"); !strings.Contains(l, "no tdx-guest") || !strings.Contains(l, "10.1") {
		t.Errorf("qemu-tee line: %s", l)
	}
	line(t, out, "FAIL  kvm")
	line(t, out, "ok    tee-tdx")
}

func TestMissingPieces(t *testing.T) {
	shareDir(t) // no assets
	bins := map[string]string{"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64"}
	h, probes := fakeHost(fakeRoot(t, nil), bins, nil, qemuOut)
	out, rc := runCheck(t, h, class(t, "qemu-coco-dev"))
	if rc != ExitCannot {
		t.Fatalf("rc = %d\n%s", rc, out)
	}
	if *probes != 0 {
		t.Error("probed KVM without /dev/kvm")
	}
	line(t, out, "warn  kvm        /dev/kvm absent")
	line(t, out, "ok    vsock      vhost-user vsock served by the shim")
	if l := line(t, out, "FAIL  asset"); !strings.Contains(l, "make guest-assets") {
		t.Errorf("asset line: %s", l)
	}
	line(t, out, "FAIL  mkfs")
}

// A class that names a vsock daemon needs it installed, or the device.
func TestVsockDaemonNeedsBinary(t *testing.T) {
	shareDir(t, "vmlinux", "initrd.img")
	p := filepath.Join(t.TempDir(), "configuration-daemon.toml")
	if err := os.WriteFile(p, []byte("[hypervisor]\naccel = \"tcg\"\n[hypervisor.vsock]\ndaemon_path = \"vhost-device-vsock\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	bins := map[string]string{"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "mkfs.erofs": "/usr/bin/mkfs.erofs"}
	h, _ := fakeHost(fakeRoot(t, nil), bins, nil, qemuOut)
	out, _ := runCheck(t, h, cfg)
	if l := line(t, out, "FAIL  vsock"); !strings.Contains(l, "vhost-device-vsock") {
		t.Errorf("vsock line: %s", l)
	}
	h, _ = fakeHost(fakeRoot(t, nil), qemuBins, nil, qemuOut)
	out, _ = runCheck(t, h, cfg)
	line(t, out, "ok    vsock      vhost-user vsock through /usr/bin/vhost-device-vsock")
}

func TestVhostModeNeedsDevice(t *testing.T) {
	shareDir(t, "vmlinux", "initrd.img")
	p := filepath.Join(t.TempDir(), "configuration-vhost.toml")
	if err := os.WriteFile(p, []byte("[hypervisor]\naccel = \"tcg\"\n[hypervisor.vsock]\nmode = \"vhost\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := fakeHost(fakeRoot(t, nil), qemuBins, nil, qemuOut)
	out, rc := runCheck(t, h, cfg)
	if rc != ExitCannot {
		t.Fatalf("rc = %d\n%s", rc, out)
	}
	line(t, out, "FAIL  vsock      /dev/vhost-vsock absent")
	line(t, out, "info  kvm") // accel tcg: KVM does not matter

	h, _ = fakeHost(fakeRoot(t, map[string]string{"dev/vhost-vsock": ""}), qemuBins, nil, qemuOut)
	out, rc = runCheck(t, h, cfg)
	if rc != ExitOK {
		t.Fatalf("rc = %d\n%s", rc, out)
	}
	line(t, out, "ok    vsock      /dev/vhost-vsock present")
}

func TestMainUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := Main(context.Background(), []string{"--bogus"}, &out, &errb); rc != ExitBadUsage {
		t.Errorf("bad flag rc = %d", rc)
	}
	errb.Reset()
	if rc := Main(context.Background(), []string{"--config", "/nonexistent/c.toml"}, &out, &errb); rc != ExitBadUsage ||
		!strings.Contains(errb.String(), "/nonexistent/c.toml") {
		t.Errorf("missing config rc = %d, stderr %q", rc, errb.String())
	}
	errb.Reset()
	if rc := Main(context.Background(), []string{"--class", "qemu-sgx"}, &out, &errb); rc != ExitBadUsage ||
		!strings.Contains(errb.String(), "configuration-qemu-snp.toml") {
		t.Errorf("unknown class rc = %d, stderr %q", rc, errb.String())
	}
	if rc := Main(context.Background(), []string{"--config", "a", "--class", "b"}, &out, &errb); rc != ExitBadUsage {
		t.Errorf("both flags rc = %d", rc)
	}
	if rc := Main(context.Background(), []string{"-h"}, &out, &errb); rc != ExitOK {
		t.Errorf("-h rc = %d", rc)
	}
}
