//go:build integration

package boottest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/guest-assets/initrd"
	"github.com/coco-runtime/coco/guest-assets/internal/vmlinux"
)

// TestOwnKernel checks the kernel `make kernel GUEST_KERNEL=own` builds
// (issue 21): its config from the build, its two boot images, and, booted
// under TCG both ways, from the inside of the guest: configfs-tsm is there
// and the running config (/proc/config.gz) has the SEV and TDX guest
// drivers built in and no modules (testinit's cocotest_builtin=1).
//
//	make kernel GUEST_KERNEL=own GUEST_OUT=build/guest-own
//	COCO_GUEST_DIR=$PWD/build/guest-own go test -tags integration -run TestOwnKernel ./guest-assets/internal/boottest/
func TestOwnKernel(t *testing.T) {
	cfg, err := os.ReadFile(filepath.Join(assets, "kernel.config"))
	if err != nil {
		t.Skipf("%s holds no own kernel (%v): build one with `make kernel GUEST_KERNEL=own` (GUEST_OUT=build/guest-own keeps the default assets)", assets, err)
	}
	checkBuiltinConfig(t, cfg)

	elf, err := os.ReadFile(filepath.Join(assets, "vmlinux"))
	if err != nil {
		t.Fatal(err)
	}
	if err := vmlinux.CheckPVH(elf); err != nil {
		t.Errorf("vmlinux cannot be booted directly: %v (CONFIG_PVH)", err)
	}
	bz, err := os.ReadFile(filepath.Join(assets, "vmlinuz"))
	if err != nil {
		t.Fatal(err)
	}
	if !isPE(bz) {
		t.Errorf("vmlinuz has no PE header: firmware (OVMF) cannot start it (CONFIG_EFI_STUB)")
	}

	dir := t.TempDir()
	img := buildInitrd(t, dir, initrd.None, false)
	manifest, err := os.ReadFile(filepath.Join(assets, "modules.manifest"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(manifest), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			t.Errorf("modules.manifest of a built-in kernel lists %s", l)
		}
	}
	release, _ := os.ReadFile(filepath.Join(assets, "kernel.release"))
	for _, kernel := range []string{"vmlinux", "vmlinuz"} {
		t.Run(kernel, func(t *testing.T) {
			r := boot(t, dir, filepath.Join(assets, kernel), img, false, "cocotest_builtin=1")
			if !strings.Contains(r.console, "builtin=ok tsm=ok") {
				t.Fatalf("the guest did not confirm configfs-tsm and its built-in drivers:\n%s", r.console)
			}
			t.Logf("%s %s: init started at %d ms guest uptime, QEMU wall %.2f s",
				bytes.TrimSpace(release), kernel, r.bootMs, r.wall.Seconds())
		})
	}
}

// checkBuiltinConfig: the TEE guest drivers and configfs-tsm are built in,
// module support is off and nothing is a module.
func checkBuiltinConfig(t *testing.T, cfg []byte) {
	t.Helper()
	have := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(cfg))
	for sc.Scan() {
		l := sc.Text()
		have[l] = true
		if strings.HasSuffix(l, "=m") {
			t.Errorf("kernel.config builds a module: %s (set it =y in a fragment under guest-assets/kernel/config/)", l)
		}
	}
	for _, want := range []string{
		"# CONFIG_MODULES is not set", "CONFIG_TSM_REPORTS=y", "CONFIG_CONFIGFS_FS=y",
		"CONFIG_AMD_MEM_ENCRYPT=y", "CONFIG_SEV_GUEST=y", "CONFIG_INTEL_TDX_GUEST=y", "CONFIG_TDX_GUEST_DRIVER=y",
		"CONFIG_PVH=y", "CONFIG_EFI_STUB=y", "CONFIG_IKCONFIG_PROC=y",
	} {
		if !have[want] {
			t.Errorf("kernel.config lacks %q", want)
		}
	}
}

// isPE: a bzImage with the EFI stub starts with "MZ" and points at a
// "PE\0\0" signature from offset 0x3c, as every PE/COFF image does.
func isPE(img []byte) bool {
	if len(img) < 0x40 || string(img[:2]) != "MZ" {
		return false
	}
	off := int(binary.LittleEndian.Uint32(img[0x3c:]))
	return off > 0 && off+4 <= len(img) && string(img[off:off+4]) == "PE\x00\x00"
}
