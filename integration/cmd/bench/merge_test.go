//go:build integration

package main

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestMergeTOML: a -variant key lands in a table the class file already
// has, and the class's other keys stay.
func TestMergeTOML(t *testing.T) {
	base := "[hypervisor]\ninitrd = \"initrd-dev.img\"\nvcpus = 2\n[tee]\nkind = \"none\"\n"
	out, err := mergeTOML([]byte(base), "[hypervisor]\nmemory_huge_pages = false\nvcpus = 1\n[network]\ninterfaces = \"none\"")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Hypervisor struct {
			Initrd          string `toml:"initrd"`
			VCPUs           int    `toml:"vcpus"`
			MemoryHugePages *bool  `toml:"memory_huge_pages"`
		} `toml:"hypervisor"`
		TEE     struct{ Kind string } `toml:"tee"`
		Network struct {
			Interfaces string `toml:"interfaces"`
		} `toml:"network"`
	}
	if _, err := toml.Decode(string(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	h := got.Hypervisor
	if h.Initrd != "initrd-dev.img" || h.VCPUs != 1 || h.MemoryHugePages == nil || *h.MemoryHugePages || got.TEE.Kind != "none" || got.Network.Interfaces != "none" {
		t.Errorf("merged wrongly: %+v\n%s", got, out)
	}
	if _, err := mergeTOML([]byte(base), "[hypervisor\n"); err == nil || !strings.Contains(err.Error(), "table name") {
		t.Errorf("a broken -variant: err = %v, want the parser's complaint", err)
	}
}
