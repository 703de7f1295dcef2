package measure

import (
	"fmt"
	"sort"

	"github.com/containerd/errdefs"
)

// CPUSig computes the CPUID Fn0000_0001_EAX signature from family, model and
// stepping (AMD CPUID specification #25481): families above 0xF are encoded
// as 0xF plus an extended family, models split into low and extended nibbles.
func CPUSig(family, model, stepping uint32) uint32 {
	famLow, famExt := family, uint32(0)
	if family > 0xf {
		famLow, famExt = 0xf, (family-0xf)&0xff
	}
	return famExt<<20 | (model>>4&0xf)<<16 | famLow<<8 | (model&0xf)<<4 | stepping&0xf
}

type fms struct{ family, model, stepping uint32 }

// cpuTypes maps QEMU's AMD EPYC CPU model names to family/model/stepping
// (QEMU target/i386 builtin_x86_defs).
func cpuTypes() map[string]fms {
	epyc := fms{23, 1, 2}
	rome := fms{23, 49, 0}
	milan := fms{25, 1, 1}
	genoa := fms{25, 17, 0}
	return map[string]fms{
		"EPYC": epyc, "EPYC-v1": epyc, "EPYC-v2": epyc, "EPYC-IBPB": epyc, "EPYC-v3": epyc, "EPYC-v4": epyc,
		"EPYC-Rome": rome, "EPYC-Rome-v1": rome, "EPYC-Rome-v2": rome, "EPYC-Rome-v3": rome,
		"EPYC-Milan": milan, "EPYC-Milan-v1": milan, "EPYC-Milan-v2": milan,
		"EPYC-Genoa": genoa, "EPYC-Genoa-v1": genoa,
		"EPYC-Turin": {26, 0, 0},
	}
}

// CPUTypes lists the known vCPU type names, sorted.
func CPUTypes() []string {
	m := cpuTypes()
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// CPUTypeSig returns the signature of a named vCPU type (QEMU -cpu name).
func CPUTypeSig(name string) (uint32, error) {
	t, ok := cpuTypes()[name]
	if !ok {
		return 0, fmt.Errorf("vcpu type %q is not known; known types: %v: %w", name, CPUTypes(), errdefs.ErrInvalidArgument)
	}
	return CPUSig(t.family, t.model, t.stepping), nil
}
