// Package driver is the table of VMM drivers: the one place that maps
// hypervisor.driver ("qemu", "clh") to the code that launches a VM or shows
// what it would launch. The sandbox, vm-command and measure all come
// through here, so a driver added to the table is known to all three.
package driver

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/clh"
	"github.com/coco-runtime/coco/hypervisor/qemu"
)

// Driver is one VMM driver.
type Driver struct {
	Name string
	// New validates a resolved config and prepares a VM; nothing runs
	// until Start. Binaries and guest assets must exist.
	New func(hypervisor.Config) (hypervisor.VM, error)
	// Plan validates like New, but what this host lacks (binary, assets)
	// becomes a note: the result shows its Command and cannot start.
	Plan func(hypervisor.Config) (hypervisor.Commander, error)
}

// table is a function so that no caller can change it.
func table() []Driver {
	return []Driver{
		{Name: "qemu",
			New:  func(c hypervisor.Config) (hypervisor.VM, error) { return qemu.New(c) },
			Plan: func(c hypervisor.Config) (hypervisor.Commander, error) { return qemu.Plan(c) }},
		{Name: "clh",
			New:  func(c hypervisor.Config) (hypervisor.VM, error) { return clh.New(c) },
			Plan: clh.Plan},
	}
}

// Names lists the drivers in a stable order.
func Names() []string {
	var out []string
	for _, d := range table() {
		out = append(out, d.Name)
	}
	return out
}

// Get returns the driver called name; "" is the default, qemu. An unknown
// name is errdefs.ErrInvalidArgument naming the ones there are.
func Get(name string) (Driver, error) {
	if name == "" {
		name = "qemu"
	}
	for _, d := range table() {
		if d.Name == name {
			return d, nil
		}
	}
	q := make([]string, 0, 2)
	for _, n := range Names() {
		q = append(q, strconv.Quote(n))
	}
	return Driver{}, fmt.Errorf("hypervisor.driver = %q: want %s: %w", name, strings.Join(q, " or "), errdefs.ErrInvalidArgument)
}

// New prepares the VM cfg describes with its driver.
func New(cfg hypervisor.Config) (hypervisor.VM, error) {
	d, err := Get(cfg.Driver)
	if err != nil {
		return nil, err
	}
	return d.New(cfg)
}

// Plan shows what cfg's driver would launch (see Driver.Plan).
func Plan(cfg hypervisor.Config) (hypervisor.Commander, error) {
	d, err := Get(cfg.Driver)
	if err != nil {
		return nil, err
	}
	return d.Plan(cfg)
}
