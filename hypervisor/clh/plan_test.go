package clh

import (
	"strings"
	"testing"

	"github.com/coco-runtime/coco/hypervisor"
)

func TestPlanNotesWhatTheHostLacks(t *testing.T) {
	cfg := hypervisor.Config{
		Driver: "clh", Path: "/nonexistent/cloud-hypervisor", StateDir: "/run/coco/p/vm",
		VCPUs: 1, MemoryMiB: 512, Kernel: "/nonexistent/vmlinux",
	}
	if _, err := New(cfg); err == nil {
		t.Fatal("New accepted a missing binary")
	}
	c, err := Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lines, notes, err := c.Command()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(lines, "\n"), `"kernel": "/nonexistent/vmlinux"`) {
		t.Errorf("body lacks the kernel:\n%s", strings.Join(lines, "\n"))
	}
	all := strings.Join(notes, "\n")
	for _, want := range []string{"not on this host", "/nonexistent/cloud-hypervisor", "/nonexistent/vmlinux"} {
		if !strings.Contains(all, want) {
			t.Errorf("notes lack %q:\n%s", want, all)
		}
	}
	// Configuration errors stay errors.
	cfg.VCPUs = 0
	if _, err := Plan(cfg); err == nil {
		t.Error("Plan accepted vcpus = 0")
	}
}
