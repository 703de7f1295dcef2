package check

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// KernelConfigName is the build config `make guest-assets` puts next to our
// kernel (and `make install` next to the installed one). Debian's packaged
// kernel has none there.
const KernelConfigName = "kernel.config"

// guestFeature is a guest kernel option a TEE class needs built in.
type guestFeature struct {
	option, why string
}

// guestNeeds lists, per TEE, what the guest kernel must have built in for
// the agent to boot in it and produce evidence (agent/attest reads reports
// from configfs-tsm, /dev/sev-guest or /dev/tdx_guest).
func guestNeeds(kind tee.Kind) []guestFeature {
	tsm := guestFeature{"CONFIG_TSM_REPORTS", "configfs-tsm attestation reports (/sys/kernel/config/tsm/report)"}
	mem := guestFeature{"CONFIG_AMD_MEM_ENCRYPT", "booting with encrypted memory"}
	switch kind {
	case tee.SEV, tee.SEVES:
		return []guestFeature{mem}
	case tee.SNP:
		return []guestFeature{mem, {"CONFIG_SEV_GUEST", "SNP reports (/dev/sev-guest)"}, tsm}
	case tee.TDX:
		return []guestFeature{{"CONFIG_INTEL_TDX_GUEST", "booting as a TD"}, {"CONFIG_TDX_GUEST_DRIVER", "TDX quotes (/dev/tdx_guest)"}, tsm}
	}
	return nil
}

// guestKernel says whether the class's guest kernel has what its TEE needs,
// from the build config next to the kernel.
func guestKernel(cfg *configs.Config, kind tee.Kind) []fact {
	needs := guestNeeds(kind)
	if len(needs) == 0 || cfg.Hypervisor.Kernel == "" {
		return nil
	}
	path := filepath.Join(filepath.Dir(cfg.Hypervisor.Kernel), KernelConfigName)
	opts, err := readKernelConfig(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []fact{{status: statusWarn, name: "guest kernel",
			detail: fmt.Sprintf("no %s next to %s: cannot tell whether it has what %s needs (Debian's 6.1 lacks configfs-tsm and the TDX guest driver)", KernelConfigName, cfg.Hypervisor.Kernel, kind),
			fix:    "make guest-assets (our kernel, the default) and make install"}}
	}
	if err != nil {
		return []fact{{status: statusWarn, name: "guest kernel", detail: err.Error()}}
	}
	var missing []string
	for _, n := range needs {
		if opts[n.option] != "y" {
			missing = append(missing, fmt.Sprintf("%s (%s)", n.option, n.why))
		}
	}
	if len(missing) > 0 {
		return []fact{{status: statusFail, name: "guest kernel",
			detail: fmt.Sprintf("%s lacks, built in, what %s needs: %s", cfg.Hypervisor.Kernel, kind, strings.Join(missing, ", ")),
			fix:    "boot our kernel (make guest-assets GUEST_KERNEL=own), or add the options to your kernel's config"}}
	}
	return []fact{{status: statusOK, name: "guest kernel", detail: fmt.Sprintf("%s has what %s needs built in", cfg.Hypervisor.Kernel, kind)}}
}

// readKernelConfig reads a Kconfig .config into option → value ("y", "m",
// a number or a quoted string); options that are "not set" are absent.
func readKernelConfig(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	opts := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && strings.HasPrefix(k, "CONFIG_") {
			opts[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return opts, nil
}
