package configs

import (
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the loader. It must never panic, and
// whatever it accepts must resolve into a VM description and load again to
// the same result (validation is not order- or state-dependent).
func FuzzLoad(f *testing.F) {
	for _, name := range Names() {
		b, err := Embedded(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	def, _ := Embedded(defaultsFile)
	f.Add(def)
	f.Add([]byte("[hypervisor]\nvcpus = 2\nVCPUS = 3\n"))
	f.Add([]byte("[tee]\nkind = \"snp\"\n[tee.snp]\nid_block = \"AAAA\"\n"))
	f.Add([]byte("[hypervisor]\nboot_timeout = \"1h1s\"\n[x.y.z]\n"))
	f.Add([]byte("[runtime]\nannotations_allowed = [\"[\", 1]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse("fuzz.toml", data, noEnv)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.toml: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if _, err := c.VM("fuzz", "/run/coco/fuzz"); err != nil {
			t.Fatalf("accepted config yields no VM: %v", err)
		}
		again, err := parse("fuzz.toml", data, noEnv)
		if err != nil {
			t.Fatalf("second load failed: %v", err)
		}
		if again.Hypervisor != c.Hypervisor || again.TEE != c.TEE || again.Agent != c.Agent {
			t.Fatalf("loads differ: %+v vs %+v", c, again)
		}
	})
}
