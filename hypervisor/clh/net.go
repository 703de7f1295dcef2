package clh

import (
	"context"
	"fmt"
	"os"
	"regexp"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
)

// maxNICs bounds the NICs of one VM: each virtio-net device takes a slot
// of PCI segment 0, which the boot disks, vsock and the disks hot-plugged
// for containers share. Same bound as the QEMU driver.
const maxNICs = 8

// nicQueuePairs is what every NIC gets: hypervisor.NIC carries one queue
// of its tap, and Cloud Hypervisor serves one rx/tx queue pair per fd.
// Multiqueue would need a tap opened with IFF_MULTI_QUEUE and one fd per
// queue pair; neither exists yet.
const nicQueuePairs = 1

var nicIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,16}$`)

// nicDeviceID is the NIC's device id in Cloud Hypervisor. Disks and NICs
// share one id space there, and disk ids are chosen elsewhere; the prefix
// keeps a NIC from taking a name a disk may want.
func nicDeviceID(id string) string { return "nic-" + id }

// validateNICs checks the NICs a VM is given against each other and the
// boot disks; errors name the NIC and the fix.
func validateNICs(nics []hypervisor.NIC, disks []hypervisor.Disk) error {
	if len(nics) > maxNICs {
		return invalid("%d network interfaces, at most %d (each takes a PCI slot): give the pod fewer interfaces", len(nics), maxNICs)
	}
	diskIDs := map[string]bool{}
	for _, d := range disks {
		diskIDs[d.ID] = true
	}
	seen := map[string]bool{}
	for i, n := range nics {
		switch {
		case !nicIDPattern.MatchString(n.ID):
			return invalid("nic %d: id %q: want 1-16 of [A-Za-z0-9_-]", i, n.ID)
		case seen[n.ID]:
			return invalid("nic %d: id %q is used twice: give each NIC its own id", i, n.ID)
		case diskIDs[nicDeviceID(n.ID)]:
			return invalid("nic %q: its device id %q is also a disk's id: rename the disk", n.ID, nicDeviceID(n.ID))
		case len(n.MAC) != 6 || n.MAC[0]&1 != 0:
			return invalid("nic %q: mac %q: want a 6-byte unicast address (the pod interface's own)", n.ID, n.MAC)
		case n.MTU != 0 && (n.MTU < 68 || n.MTU > 65535):
			return invalid("nic %q: mtu %d: want 68-65535, or 0 to keep the tap's", n.ID, n.MTU)
		}
		seen[n.ID] = true
	}
	return nil
}

// setNICs validates nics and plans their vm.add-net bodies. MTU is
// validated but not sent (see netConfig).
func (p *plan) setNICs(nics []hypervisor.NIC, disks []hypervisor.Disk) error {
	if err := validateNICs(nics, disks); err != nil {
		return err
	}
	p.nets = nil
	for _, n := range nics {
		p.nets = append(p.nets, netConfig{ID: nicDeviceID(n.ID), MAC: n.MAC.String(), NumQueues: 2 * nicQueuePairs})
	}
	return nil
}

// checkTaps makes sure every NIC has its tap file open; a config may
// describe NICs without one (Plan), a VM cannot start with them.
func checkTaps(nics []hypervisor.NIC) error {
	for _, n := range nics {
		if n.Tap == nil {
			return invalid("nic %q: no tap file: open the tap (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) and pass it in NIC.Tap", n.ID)
		}
	}
	return nil
}

// AttachNICs adds NICs before Start; Start hands their taps to Cloud
// Hypervisor. The caller keeps its Tap files and may close them once
// Start returned: the VMM then holds its own copies.
func (v *VM) AttachNICs(nics []hypervisor.NIC) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.state != created {
		return fmt.Errorf("clh: vm %s: NICs are attached before Start: %w", v.cfg.ID, errdefs.ErrFailedPrecondition)
	}
	all := append(append([]hypervisor.NIC(nil), v.cfg.NICs...), nics...)
	if err := checkTaps(nics); err != nil {
		return err
	}
	if err := v.plan.setNICs(all, v.cfg.Disks); err != nil {
		return err
	}
	v.cfg.NICs = all
	return nil
}

// addNICs cold-plugs the NICs between vm.create and vm.boot, one PUT
// vm.add-net per NIC with its tap's fd attached to the request
// (SCM_RIGHTS). This is the only way Cloud Hypervisor v53 takes an fd
// through its API: it discards fd numbers found in any request body,
// vm.create's included, and an fd inherited at exec could only be named on
// the command line (--net fd=), which creates and boots the VM outside the
// API. The tap lives in the pod's network namespace, which the VMM (in the
// host's) cannot open by name, so an fd it must be. The kernel gives the
// VMM its copy when the request is sent, so the driver keeps no
// descriptor of its own, the cloud-hypervisor process inherits none at
// exec, and the caller's files are needed only until Start returns.
func (v *VM) addNICs(ctx context.Context) error {
	for i, n := range v.cfg.NICs {
		if err := v.api.putFiles(ctx, "vm.add-net", v.plan.nets[i], []*os.File{n.Tap}, nil); err != nil {
			return fmt.Errorf("nic %q: %w", n.ID, err)
		}
	}
	return nil
}
