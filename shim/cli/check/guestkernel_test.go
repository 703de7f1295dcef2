package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// A guest kernel's config as `make guest-assets` leaves it next to vmlinuz.
const ownKernelConfig = `# comment
CONFIG_AMD_MEM_ENCRYPT=y
CONFIG_SEV_GUEST=y
CONFIG_INTEL_TDX_GUEST=y
CONFIG_TDX_GUEST_DRIVER=y
CONFIG_TSM_REPORTS=y
`

func kernelIn(t *testing.T, config string) *configs.Config {
	t.Helper()
	dir := t.TempDir()
	if config != "" {
		if err := os.WriteFile(filepath.Join(dir, KernelConfigName), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &configs.Config{}
	cfg.Hypervisor.Kernel = filepath.Join(dir, "vmlinuz")
	return cfg
}

func TestGuestKernelHasWhatTheTEENeeds(t *testing.T) {
	for _, kind := range []tee.Kind{tee.SEV, tee.SEVES, tee.SNP, tee.TDX} {
		got := guestKernel(kernelIn(t, ownKernelConfig), kind)
		if len(got) != 1 || got[0].status != statusOK {
			t.Errorf("%s with our kernel's config: %+v, want one OK fact", kind, got)
		}
	}
	if got := guestKernel(kernelIn(t, ""), tee.None); got != nil {
		t.Errorf("coco-dev (no TEE) asks nothing of the kernel, got %+v", got)
	}
}

func TestGuestKernelNamesWhatIsMissing(t *testing.T) {
	// Debian's 6.1 style: the SNP driver only as a module, no configfs-tsm.
	cfg := kernelIn(t, "CONFIG_AMD_MEM_ENCRYPT=y\nCONFIG_SEV_GUEST=m\n# CONFIG_TSM_REPORTS is not set\n")
	got := guestKernel(cfg, tee.SNP)
	if len(got) != 1 || got[0].status != statusFail {
		t.Fatalf("SNP on a kernel without SEV_GUEST built in: %+v, want one failure", got)
	}
	for _, want := range []string{"CONFIG_SEV_GUEST", "CONFIG_TSM_REPORTS"} {
		if !strings.Contains(got[0].detail, want) {
			t.Errorf("detail %q does not name %s", got[0].detail, want)
		}
	}
	if strings.Contains(got[0].detail, "CONFIG_AMD_MEM_ENCRYPT") {
		t.Errorf("detail %q names an option the kernel has", got[0].detail)
	}
	if got[0].fix == "" {
		t.Error("a failure without a fix")
	}
}

func TestGuestKernelWithoutConfigWarns(t *testing.T) {
	got := guestKernel(kernelIn(t, ""), tee.TDX)
	if len(got) != 1 || got[0].status != statusWarn || !strings.Contains(got[0].detail, KernelConfigName) {
		t.Fatalf("TDX with no kernel.config: %+v, want a warning naming %s", got, KernelConfigName)
	}
}
