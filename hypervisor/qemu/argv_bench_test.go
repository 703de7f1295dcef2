package qemu

import "testing"

// BenchmarkArgv builds the QEMU command line of every golden configuration
// (plan + argv, as Start does before exec): it runs once per pod start.
func BenchmarkArgv(b *testing.B) {
	for name, cfg := range tableConfigs() {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				vm, err := newVM(cfg, fakeHost(false), true)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := vm.Command(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
