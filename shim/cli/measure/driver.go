package measure

import (
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/qemu"
)

// driverCommand asks the VMM driver for the exact argv it would run, without
// requiring the VMM or the assets to be installed on this host (the digest
// is often computed on a workstation for a node elsewhere). Only QEMU
// launches SEV guests from OVMF.
func driverCommand(cfg hypervisor.Config) (argv, notes []string, err error) {
	if cfg.Driver != "" && cfg.Driver != "qemu" {
		return nil, nil, fmt.Errorf("hypervisor.driver %q: launch digests are computed for QEMU launches only: %w", cfg.Driver, errdefs.ErrNotImplemented)
	}
	vm, err := qemu.Plan(cfg)
	if err != nil {
		return nil, nil, err
	}
	return vm.Command()
}
