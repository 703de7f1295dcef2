package qemu

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// machine describes what the builder needs to know about a QEMU machine type.
type machine struct {
	name      string
	binary    string     // default QEMU binary for the machine's architecture
	console   string     // guest kernel console device of -serial
	virtio    string     // transport suffix of virtio devices: "pci" or "ccw"
	rootPorts bool       // a PCIe bus to hot-plug disks on (q35, microvm with pcie=on)
	tees      []tee.Kind // TEEs this machine can host besides none
}

func machineFor(name string) (machine, bool) {
	switch name {
	case "q35":
		return machine{name, "qemu-system-x86_64", "ttyS0", "pci", true, []tee.Kind{tee.SEV, tee.SEVES, tee.SNP, tee.TDX}}, true
	case "microvm":
		return machine{name, "qemu-system-x86_64", "ttyS0", "pci", true, nil}, true
	case "pseries":
		return machine{name, "qemu-system-ppc64", "hvc0", "pci", false, []tee.Kind{tee.PEF}}, true
	case "s390-ccw-virtio":
		return machine{name, "qemu-system-s390x", "ttysclp0", "ccw", false, []tee.Kind{tee.SE}}, true
	}
	return machine{}, false
}

func (m machine) x86() bool { return m.binary == "qemu-system-x86_64" }

// IDs and names the builder gives QEMU objects; QMP code refers to them.
const (
	teeID       = "tee0"
	memID       = "mem0"
	qmpChardev  = "qmp"
	conChardev  = "console"
	vsockID     = "vsock0"
	vsockChrID  = "vsockchr"
	rootPortFmt = "rp%d"
	// rootPortCount PCIe root ports are created where disks hot-plug onto
	// root ports (see hotplugOnBridge), one per hot-plugged disk (container
	// root filesystems), as the functions of one multifunction slot so they
	// cost a single PCI slot.
	rootPortCount = 8
	rootPortSlot  = 0x10
	// hotplugBridge is the PCIe-to-PCI bridge plain q35 VMs hot-plug disks
	// onto, in slots 1-31, at rootPortSlot of pcie.0.
	hotplugBridge      = "pcibr0"
	hotplugBridgeSlots = 31
)

// Vsock modes after "auto" is resolved.
const (
	modeVhost     = "vhost"
	modeVhostUser = "vhost-user"
)

// plan is a Config with every default and every host-dependent choice
// resolved. argv turns it into a command line without looking at the host,
// which is what makes golden files possible.
type plan struct {
	cfg     hypervisor.Config // defaults applied
	tee     tee.Config        // defaults applied
	machine machine
	binary  string // QEMU binary as it will be executed
	accel   string // "kvm" or "tcg"
	cpu     string
	mode    string // modeVhost or modeVhostUser
	cid     uint32
	vhostFD int // fd number of a reserved /dev/vhost-vsock in QEMU, 0 = none
	// ramFile: guest memory is a file the shim opens (ram.go) and QEMU
	// inherits as ramFD, rather than a memfd QEMU makes.
	ramFile bool
	paths   paths
	notes   []string
}

// paths are the host files of one VM, all inside its StateDir.
type paths struct {
	qmp       string // QMP control socket
	console   string // guest serial console log, capped (hypervisor.Console)
	conPipe   string // FIFO QEMU writes the console into; the shim copies it to console
	log       string // QEMU's stdout and stderr
	daemonLog string // vhost-device-vsock's stdout and stderr
	vhostUser string // vhost-user control socket between QEMU and vhost-device-vsock
	hybrid    string // hybrid-vsock socket the host dials (vhost-device-vsock --uds-path)
}

func (p *plan) confidential() bool { return p.tee.Kind.Confidential() }

func nodeName(id string) string  { return "d-" + id }
func diskDevID(id string) string { return "disk-" + id }
func rootPort(i int) string      { return fmt.Sprintf(rootPortFmt, i) }

// hotplugOnBridge: a plain q35 VM hot-plugs disks onto one PCIe-to-PCI
// bridge (ACPI hotplug, 31 slots), which the guest kernel sets up for
// nothing at boot; 8 PCIe root ports cost ~200 ms of guest boot under TCG
// (ACPI namespace, PME/AER/hotplug port services, resource assignment:
// paired bare boots, 8 ports vs none). Confidential VMs and microvm keep
// root ports: native PCIe hotplug is what TDX and SNP guests are run with,
// and microvm has no ACPI PCI hotplug.
func (p *plan) hotplugOnBridge() bool {
	return p.machine.name == "q35" && !p.confidential()
}

// hotplugSlots is how many disks can be hot-plugged at once.
func (p *plan) hotplugSlots() int {
	switch {
	case !p.machine.rootPorts:
		return 0
	case p.hotplugOnBridge():
		return hotplugBridgeSlots
	}
	return rootPortCount
}

// hotplugPlace is the bus and address of hot-plug slot i.
func (p *plan) hotplugPlace(i int) (bus, addr string) {
	if p.hotplugOnBridge() {
		return hotplugBridge, fmt.Sprintf("%#x", i+1)
	}
	return rootPort(i), ""
}
func memSize(mib uint32) string          { return strconv.FormatUint(uint64(mib), 10) + "M" }
func (p *plan) virtio(dev string) string { return dev + "-" + p.machine.virtio }

// argv is the full QEMU command line, binary first.
func (p *plan) argv() ([]string, error) {
	c := &cmdline{args: []string{p.binary}}
	c.opt("-name", newOpts("").set("guest", "coco-"+p.cfg.ID).setBool("debug-threads", true))
	// No default devices, no host config files, no display: everything the
	// guest sees is on this command line. -no-reboot turns a guest reboot
	// (including panic=1) into QEMU exiting, so Wait can report it.
	c.flag("-nodefaults")
	c.flag("-no-user-config")
	c.flag("-nographic")
	c.flag("-no-reboot")

	m := newOpts(p.machine.name)
	if p.confidential() {
		m.set("confidential-guest-support", teeID)
	}
	if p.machine.name == "microvm" {
		// PCIe on microvm so the same -pci devices and root ports work.
		m.setBool("pcie", true)
	}
	if p.machine.name == "q35" && !p.confidential() {
		// Legacy devices nothing in the guest uses. The guest kernel probes
		// the SATA controller's links at every boot: ~100-160 ms under TCG
		// (paired bare boots, median of 7). Confidential VMs keep the
		// machine as it is: TDX firmware measures its ACPI tables.
		m.setBool("sata", false).setBool("smbus", false).setBool("i8042", false).set("vmport", "off")
	}
	m.set("memory-backend", memID)
	c.opt("-machine", m)
	c.arg("-accel", p.accel)
	if p.cpu != "" {
		c.arg("-cpu", p.cpu)
	}
	c.arg("-smp", strconv.FormatUint(uint64(p.cfg.VCPUs), 10))
	c.arg("-m", memSize(p.cfg.MemoryMiB))
	// A memfd backend can be shared with a vhost-user daemon, which must map
	// guest memory to move vsock packets. The file of OpenRAM is shared the
	// same way; align=2M lets its huge pages be mapped whole.
	if p.ramFile {
		c.object(newOpts("memory-backend-file").set("id", memID).set("size", memSize(p.cfg.MemoryMiB)).
			setBool("share", true).set("mem-path", fmt.Sprintf("/proc/self/fd/%d", p.ramFD())).set("align", "2M"))
	} else {
		c.object(newOpts("memory-backend-memfd").set("id", memID).set("size", memSize(p.cfg.MemoryMiB)).
			setBool("share", p.mode == modeVhostUser))
	}

	if err := p.teeObject(c); err != nil {
		return nil, err
	}

	if p.cfg.Firmware != "" {
		c.arg("-bios", p.cfg.Firmware)
	}
	c.arg("-kernel", p.cfg.Kernel)
	if p.cfg.Initrd != "" {
		c.arg("-initrd", p.cfg.Initrd)
	}
	c.arg("-append", p.kernelParams())

	c.chardev(newOpts("socket").set("id", qmpChardev).set("path", p.paths.qmp).setBool("server", true).setBool("wait", false))
	c.opt("-mon", newOpts("").set("chardev", qmpChardev).set("mode", "control"))
	// A FIFO, not the log itself: the shim caps the log (hypervisor.Console).
	c.chardev(newOpts("file").set("id", conChardev).set("path", p.paths.conPipe))
	c.arg("-serial", "chardev:"+conChardev)

	if !p.confidential() {
		// No virtio-rng: the guest kernel seeds its crng from the CPU
		// (RDRAND, also under TCG's "max"), and the initrd carries no
		// virtio-rng driver, so the device only cost PCI enumeration.
		// Free page reporting: the guest hands pages it frees (the initrd
		// image once unpacked, exited containers) back to the host. make
		// bench: QEMU RSS -40 MB per pod (guest RAM resident 177 -> 136 MB)
		// for one more small module. Confidential guests get none: their
		// memory is private and the host must not see which pages are free.
		c.device(newOpts(p.virtio("virtio-balloon")).set("id", "balloon0").setBool("free-page-reporting", true))
	}

	if p.machine.rootPorts && p.hotplugOnBridge() {
		// ACPI hotplug owns its slots (kernelParams keeps the SHPC driver
		// away from it).
		c.device(newOpts("pcie-pci-bridge").set("id", hotplugBridge).set("bus", "pcie.0").
			set("addr", fmt.Sprintf("%#x", rootPortSlot)))
	} else if p.machine.rootPorts {
		bus := "pcie.0"
		for i := range rootPortCount {
			d := newOpts("pcie-root-port").set("id", rootPort(i)).set("bus", bus).
				set("chassis", strconv.Itoa(i+1)).set("addr", fmt.Sprintf("%#x.%d", rootPortSlot, i))
			if i == 0 {
				d.setBool("multifunction", true)
			}
			c.device(d)
		}
	}

	for _, d := range p.cfg.Disks {
		c.opt("-blockdev", p.blockdev(d))
		c.device(p.diskDevice(d, ""))
	}

	// After the hot-plug bridge, which sits at a fixed slot of pcie.0.
	p.nics(c)

	switch p.mode {
	case modeVhost:
		d := newOpts(p.virtio("vhost-vsock")).set("id", vsockID).setUint("guest-cid", uint64(p.cid))
		if p.vhostFD > 0 {
			d.set("vhostfd", strconv.Itoa(p.vhostFD))
		}
		p.platformIOMMU(d)
		c.device(d)
	case modeVhostUser:
		c.chardev(newOpts("socket").set("id", vsockChrID).set("path", p.paths.vhostUser))
		d := newOpts(p.virtio("vhost-user-vsock")).set("id", vsockID).set("chardev", vsockChrID)
		p.platformIOMMU(d)
		c.device(d)
	}
	return c.args, nil
}

// platformIOMMU sets VIRTIO_F_ACCESS_PLATFORM on virtio devices of
// confidential guests: their kernels refuse virtio devices without it,
// because DMA must go through bounce buffers in shared memory.
func (p *plan) platformIOMMU(d *opts) {
	if p.confidential() {
		d.setBool("iommu_platform", true)
	}
}

func (p *plan) kernelParams() string {
	// panic=1 with -no-reboot: a panicking guest ends the VM within a second
	// instead of hanging until the boot timeout.
	params := []string{"console=" + p.machine.console, "panic=1"}
	// Boot-speed parameters, each measured with `make bench` (a bare boot
	// of the Debian kernel under TCG, medians of 5-6 interleaved boots):
	// expedited RCU grace periods (-0.65 s together with the next one, and
	// runc create in the guest, which waits in synchronize_rcu, -0.2 s);
	// no crypto self-tests at boot (crypto_algapi_init alone took 0.3 s);
	// on x86 no TSC watchdog and no timer check (-0.1 s); quiet: every
	// console byte is an emulated UART write, a trap to QEMU (a VM exit
	// under KVM) and a write to the console file, and the ~40 KB of boot
	// messages cost 0.2 s of guest time under TCG (errors and panics still
	// print; kernel_params "loglevel=7" brings the rest back).
	params = append(params, "quiet", "rcupdate.rcu_expedited=1", "cryptomgr.notests")
	if p.machine.x86() {
		params = append(params, "tsc=reliable", "no_timer_check")
	}
	// Under TCG (development and CI only: no TEE runs there, and the host
	// reads all of guest memory anyway) two defaults of Debian's kernel cost
	// most of a second per pod, each emulated instruction by instruction:
	// - Spectre-class mitigations (a retpoline on every indirect call, the
	//   return stack refilled on every context switch) guard against
	//   speculation, which TCG does not do;
	// - init_on_alloc zeroes every page the kernel hands out, including
	//   the pages the initrd is unpacked into and then overwrites.
	// make bench, 3 interleaved rounds: RunPodSandbox 0.92x with the CPU
	// model above and mitigations=off, 0.83x with init_on_alloc=0 as well.
	// Under KVM the guest keeps both. kernel_params can turn either back on
	// (the last occurrence wins).
	if p.accel == "tcg" {
		params = append(params, "mitigations=off", "init_on_alloc=0")
	}
	// Under TCG the guest boots on one vCPU and the agent brings the others
	// up once it serves (boot.OnlineCPUs): TCG's CPUs have no constant TSC,
	// so each new vCPU calibrates its delay loop against the timer, and
	// bringing one up was 100-160 ms of guest time before init. With
	// maxcpus=1 alone the kernel would patch its LOCK prefixes out for a
	// uniprocessor (~100 ms under TCG) and back in when the second vCPU
	// comes (every site through text_poke, with a TLB flush each), so
	// noreplace-smp keeps them. Bare boot of our kernel under TCG, 2 vCPUs,
	// medians of 5 alternating boots: kernel start → init 1546 ms, 1351
	// with maxcpus=1, 1105 with noreplace-smp as well. Under KVM bringing
	// up a vCPU costs ~1 ms, and a TEE's vCPUs are part of its launch.
	if p.accel == "tcg" && p.cfg.VCPUs > 1 && !p.confidential() && p.machine.x86() {
		params = append(params, "maxcpus=1", "noreplace-smp")
	}
	// Not noapictimer, though the kernel counts the APIC timer against the
	// PIT for 100 ms of guest time (TCG offers neither the TSC-deadline
	// timer nor the CPUID leaf that would skip it) and the A/B paid
	// (RunPodSandbox -207 ms): without a working per-CPU timer the kernel
	// keeps the periodic tick and low-resolution timers ("could not switch
	// to one-shot mode: lapic is not functional"), so every sleep in a
	// container rounds up to 4 ms and idle vCPUs wake 250 times a second.
	if p.machine.rootPorts && p.hotplugOnBridge() {
		// ACPI hotplug owns the bridge's slots; the kernel's SHPC driver
		// would probe the bridge anyway and fail to register them ("error
		// -16") after 20-32 ms of guest time under TCG (initcall_debug,
		// three boots; 0.4 ms without the bridge).
		params = append(params, "initcall_blacklist=shpcd_init")
	}
	if !p.confidential() {
		ids := make([]string, len(p.cfg.Disks))
		for i, d := range p.cfg.Disks {
			ids[i] = d.ID
		}
		params = append(params, hypervisor.DisksParam+"="+strings.Join(ids, ","))
	}
	if extra := strings.TrimSpace(p.cfg.KernelParams); extra != "" {
		params = append(params, extra)
	}
	return strings.Join(params, " ")
}

// blockdev is a raw image on a host file; the format layer carries the
// read-only flag so QEMU opens the file O_RDONLY.
func (p *plan) blockdev(d hypervisor.Disk) *opts {
	o := newOpts("").set("driver", "raw").set("node-name", nodeName(d.ID))
	if d.ReadOnly {
		o.setBool("read-only", true)
	}
	o.set("file.driver", "file").set("file.filename", d.Path)
	if d.ReadOnly {
		o.setBool("file.read-only", true)
	}
	return o
}

// diskDevice is the virtio-blk device of a disk; the guest finds it by serial.
func (p *plan) diskDevice(d hypervisor.Disk, bus string) *opts {
	o := newOpts(p.virtio("virtio-blk")).set("id", diskDevID(d.ID)).set("drive", nodeName(d.ID)).set("serial", d.ID)
	if bus != "" {
		o.set("bus", bus)
	}
	// Read-only is a property of the block node (above), which virtio-blk
	// reports to the guest as VIRTIO_BLK_F_RO; the device has no flag of its own.
	p.platformIOMMU(o)
	return o
}

// teeObject emits the confidential-guest-support object of the TEE.
func (p *plan) teeObject(c *cmdline) error {
	t := p.tee
	switch t.Kind {
	case tee.None:
		return nil
	case tee.SEV, tee.SEVES:
		o := t.SEV
		c.object(newOpts("sev-guest").set("id", teeID).
			setUint("cbitpos", uint64(o.CBitPos)).setUint("reduced-phys-bits", uint64(o.ReducedPhysBits)).
			setHex("policy", uint64(o.Policy)).setBool("kernel-hashes", o.KernelHashes))
	case tee.SNP:
		o := t.SNP
		obj := newOpts("sev-snp-guest").set("id", teeID).
			setUint("cbitpos", uint64(o.CBitPos)).setUint("reduced-phys-bits", uint64(o.ReducedPhysBits)).
			setHex("policy", o.Policy).setBool("kernel-hashes", o.KernelHashes)
		if o.IDBlock != "" {
			obj.set("id-block", o.IDBlock).set("id-auth", o.IDAuth)
			if o.AuthorKeyEnabled {
				obj.setBool("author-key-enabled", true)
			}
		}
		if len(p.cfg.LaunchData) > 0 {
			obj.set("host-data", base64.StdEncoding.EncodeToString(p.cfg.LaunchData))
		}
		c.object(obj)
	case tee.TDX:
		js, err := p.tdxObject()
		if err != nil {
			return err
		}
		c.objectJSON(js)
	case tee.SE:
		c.object(newOpts("s390-pv-guest").set("id", teeID))
	case tee.PEF:
		c.object(newOpts("pef-guest").set("id", teeID))
	default:
		return fmt.Errorf("tee.kind %q: no QEMU object for it", t.Kind)
	}
	return nil
}

// tdxGuest is QEMU's tdx-guest object in JSON -object form, needed because
// quote-generation-socket is a nested SocketAddress. Field order is fixed
// by the struct, so the rendering is stable.
type tdxGuest struct {
	QOMType               string            `json:"qom-type"`
	ID                    string            `json:"id"`
	SeptVEDisable         bool              `json:"sept-ve-disable"`
	Attributes            uint64            `json:"attributes,omitempty"`
	MRConfigID            string            `json:"mrconfigid,omitempty"`
	QuoteGenerationSocket map[string]string `json:"quote-generation-socket,omitempty"`
}

func (p *plan) tdxObject() (string, error) {
	o := p.tee.TDX
	qgs, err := o.QuoteSocket()
	if err != nil {
		return "", err
	}
	obj := tdxGuest{QOMType: "tdx-guest", ID: teeID, SeptVEDisable: o.SeptVEDisable, Attributes: o.Attributes, QuoteGenerationSocket: qgs}
	if len(p.cfg.LaunchData) > 0 {
		obj.MRConfigID = base64.StdEncoding.EncodeToString(p.cfg.LaunchData)
	}
	b, err := json.Marshal(obj)
	return string(b), err
}
