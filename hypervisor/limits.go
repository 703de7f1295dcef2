package hypervisor

import (
	"errors"
	"fmt"
)

// Limits of a VM's size: configs checks a file against them, the drivers a
// Config built by hand. They catch typos (a memory size in bytes, a vCPU
// count of 1000) rather than describe any real host.
const (
	MaxVCPUs     = 256
	MinMemoryMiB = 128 // below this the guest kernel and initrd do not fit
	MaxMemoryMiB = 1 << 20
)

// CheckSize reports a vCPU count or memory size out of range; errors name
// the configuration keys.
func (c Config) CheckSize() error {
	var errs []error
	if c.VCPUs == 0 || c.VCPUs > MaxVCPUs {
		errs = append(errs, fmt.Errorf("hypervisor.vcpus = %d is out of range; allowed 1-%d", c.VCPUs, MaxVCPUs))
	}
	if c.MemoryMiB < MinMemoryMiB || c.MemoryMiB > MaxMemoryMiB {
		errs = append(errs, fmt.Errorf("hypervisor.memory_mib = %d is out of range; allowed %d-%d (MiB, not bytes)", c.MemoryMiB, MinMemoryMiB, MaxMemoryMiB))
	}
	return errors.Join(errs...)
}
