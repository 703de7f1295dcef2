package measure

import (
	"os"
	"testing"
)

// FuzzParseOVMF feeds arbitrary firmware footers (the last 4 KiB of an
// image, where the GUIDed table and SEV metadata live) to the parser and to
// every mode. Malformed tables must be errors, never panics or huge loops.
func FuzzParseOVMF(f *testing.F) {
	for _, p := range []string{amdSev, ovmfX64} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			b = b[len(b)-4096:]
		}
		img := make([]byte, 4096)
		copy(img[4096-len(b):], b)
		o, err := ParseOVMF(img)
		if err != nil {
			return
		}
		// Real metadata covers well under 1 MiB; huge mutated sizes are
		// valid but only make each run take seconds.
		total := uint64(0)
		for _, s := range o.Sections() {
			total += uint64(s.Size)
		}
		if total > 16<<20 {
			return
		}
		k := NewKernelHashes(nil, nil, "")
		for _, m := range []Mode{ModeSEV, ModeSEVES, ModeSNP} {
			for _, vmm := range []VMMType{VMMQEMU, VMMEC2, VMMGCE} {
				d, err := LaunchDigest(Params{Mode: m, VCPUs: 2, VMM: vmm, Firmware: o, Kernel: k})
				if err == nil && len(d) != 32 && len(d) != 48 {
					t.Fatalf("digest of %d bytes", len(d))
				}
			}
		}
	})
}
