package qemu

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
)

// maxNICs bounds the NICs of one VM: each takes a PCI slot of pcie.0.
const maxNICs = 8

var nicIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,16}$`)

func netdevID(id string) string { return "net-" + id }
func nicDevID(id string) string { return "nic-" + id }

// validateNICs checks the NICs a VM is given; errors name the NIC.
func validateNICs(nics []hypervisor.NIC) error {
	if len(nics) > maxNICs {
		return fmt.Errorf("%w: %d network interfaces, at most %d", errdefs.ErrInvalidArgument, len(nics), maxNICs)
	}
	seen := map[string]bool{}
	for i, n := range nics {
		switch {
		case !nicIDPattern.MatchString(n.ID):
			return fmt.Errorf("%w: nic %d: id %q: want 1-16 of [A-Za-z0-9_-]", errdefs.ErrInvalidArgument, i, n.ID)
		case seen[n.ID]:
			return fmt.Errorf("%w: nic %d: id %q used twice", errdefs.ErrInvalidArgument, i, n.ID)
		case len(n.MAC) != 6 || n.MAC[0]&1 != 0:
			return fmt.Errorf("%w: nic %q: mac %q: want a 6-byte unicast address", errdefs.ErrInvalidArgument, n.ID, n.MAC)
		case n.MTU != 0 && (n.MTU < 68 || n.MTU > 65535):
			return fmt.Errorf("%w: nic %q: mtu %d: want 68-65535", errdefs.ErrInvalidArgument, n.ID, n.MTU)
		}
		seen[n.ID] = true
	}
	return nil
}

// AttachNICs adds NICs before Start; Start passes their taps to QEMU.
func (v *VM) AttachNICs(nics []hypervisor.NIC) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started {
		return fmt.Errorf("%w: VM %s: NICs are attached before Start", errdefs.ErrFailedPrecondition, v.plan.cfg.ID)
	}
	all := append(append([]hypervisor.NIC(nil), v.plan.cfg.NICs...), nics...)
	if err := validateNICs(all); err != nil {
		return err
	}
	for _, n := range nics {
		if n.Tap == nil {
			return fmt.Errorf("%w: nic %q: no tap file", errdefs.ErrInvalidArgument, n.ID)
		}
	}
	v.plan.cfg.NICs = all
	return nil
}

// nicFD is the fd number NIC i has in QEMU: the ExtraFiles after the
// reserved vhost-vsock fd, if any. Command shows the same numbers.
func (p *plan) nicFD(i int) int {
	if p.mode == modeVhost {
		return 4 + i
	}
	return 3 + i
}

// ramFD is the fd number of the guest memory file (plan.ramFile): the
// ExtraFile after the NICs.
func (p *plan) ramFD() int { return p.nicFD(len(p.cfg.NICs)) }

// nics emits one tap netdev on an inherited fd and its virtio-net device
// per NIC. host_mtu tells the guest driver the MTU (VIRTIO_NET_F_MTU), so
// the link has it before the agent configures anything.
func (p *plan) nics(c *cmdline) {
	for i, n := range p.cfg.NICs {
		c.opt("-netdev", newOpts("tap").set("id", netdevID(n.ID)).set("fd", strconv.Itoa(p.nicFD(i))))
		d := newOpts(p.virtio("virtio-net")).set("id", nicDevID(n.ID)).set("netdev", netdevID(n.ID)).set("mac", n.MAC.String())
		if p.machine.virtio == "pci" {
			// No option ROM: the guest boots its kernel directly, never
			// from the network, and the firmware starting iPXE cost
			// ~0.5 s of every boot under TCG (make bench, QEMU exec →
			// guest clock, 2.0 s without a NIC, 2.5 s with one).
			d.set("romfile", "")
		}
		if n.MTU != 0 {
			d.setUint("host_mtu", uint64(n.MTU))
		}
		p.platformIOMMU(d)
		c.device(d)
	}
}
