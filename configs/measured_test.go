package configs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

const footers = "../virtcontainers/measure/testdata/sev-snp-measure/"

// measuredShare is a share_dir with the AmdSev firmware and the generic OVMF
// (the last 4 KiB of real builds, which hold what the check reads).
func measuredShare(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range map[string]string{"OVMF.amdsev.fd": "ovmf_AmdSev_suffix.bin", "OVMF.fd": "ovmf_OvmfX64_suffix.bin"} {
		b, err := os.ReadFile(footers + src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A QEMU SEV, SEV-ES or SNP class measures kernel, initrd and command line:
// kernel_hashes off, or a firmware that cannot check them, is refused with
// the key and the fix.
func TestMeasuredBoot(t *testing.T) {
	env := envOf(map[string]string{EnvShareDir: measuredShare(t)})
	sevES := "[tee]\nkind = \"sev-es\"\n[tee.sev]\npolicy = 0x5\n"
	refused := []struct{ name, body, key, want string }{
		{"sev hashes off", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"sev\"\n[tee.sev]\nkernel_hashes = false\n",
			"tee.sev.kernel_hashes", "set tee.sev.kernel_hashes = true"},
		{"sev-es hashes off", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n" + sevES + "kernel_hashes = false\n",
			"tee.sev.kernel_hashes", "unmeasured"},
		{"snp hashes off", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n[tee.snp]\nkernel_hashes = false\n",
			"tee.snp.kernel_hashes", `hypervisor.firmware = "OVMF.amdsev.fd"`},
		{"sev generic ovmf", "[hypervisor]\nfirmware = \"OVMF.fd\"\n[tee]\nkind = \"sev\"\n", "hypervisor.firmware", "not the AmdSev build"},
		{"sev-es generic ovmf", "[hypervisor]\nfirmware = \"OVMF.fd\"\n" + sevES, "hypervisor.firmware", "ovmf-amdsev"},
		{"snp generic ovmf", "[hypervisor]\nfirmware = \"OVMF.fd\"\n[tee]\nkind = \"snp\"\n", "hypervisor.firmware", `Set firmware = "OVMF.amdsev.fd"`},
		{"snp firmware is a directory", "[hypervisor]\nfirmware = \".\"\n[tee]\nkind = \"snp\"\n", "hypervisor.firmware", "not a regular file"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "configuration-x.toml", tc.body)
			_, err := load(p, env)
			if err == nil || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("want an invalid-argument error, got %v", err)
			}
			if msg := err.Error(); !strings.Contains(msg, p+": "+tc.key+": ") || !strings.Contains(msg, tc.want) {
				t.Fatalf("error does not name %s and say %q:\n%s", tc.key, tc.want, msg)
			}
		})
	}
	accepted := map[string]string{
		"sev amdsev":    "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"sev\"\n",
		"sev-es amdsev": "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n" + sevES,
		"snp amdsev":    "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n",
		// Not installed yet: CheckAssets reports it, loading does not.
		"snp firmware absent": "[hypervisor]\nfirmware = \"absent.fd\"\n[tee]\nkind = \"snp\"\n",
		// TDX does not use the SEV hashes page; CLH takes SNP settings from the IGVM.
		"tdx generic ovmf": "[hypervisor]\nfirmware = \"OVMF.fd\"\n[tee]\nkind = \"tdx\"\n",
		"clh snp":          "[hypervisor]\ndriver = \"clh\"\nigvm = \"x.igvm\"\n[tee]\nkind = \"snp\"\n[tee.snp]\nkernel_hashes = false\n",
	}
	for name, body := range accepted {
		t.Run(name, func(t *testing.T) {
			if _, err := load(writeFile(t, "c.toml", body), env); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A FIFO put where the firmware should be must not hang loading.
func TestMeasuredBootFIFO(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "OVMF.amdsev.fd"), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	p := writeFile(t, "c.toml", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n")
	done := make(chan error, 1)
	go func() {
		_, err := load(p, envOf(map[string]string{EnvShareDir: dir}))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "hypervisor.firmware") {
			t.Fatalf("fifo firmware: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("loading blocked on a FIFO firmware")
	}
}
