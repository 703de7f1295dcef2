package clh

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// The request and response bodies below carry only the fields this driver
// sends or reads. Field names, JSON types and required lists follow the
// upstream OpenAPI schema (vmm/src/api/openapi/cloud-hypervisor.yaml, v53);
// the tests check every field against testdata/openapi-subset.json. Field
// order here is the order `vm-command` prints, so keep it stable.

// vmConfig is the body of PUT vm.create (schema VmConfig; payload required).
type vmConfig struct {
	Cpus     cpusConfig      `json:"cpus"`
	Memory   memoryConfig    `json:"memory"`
	Payload  payloadConfig   `json:"payload"`
	Disks    []diskConfig    `json:"disks,omitempty"`
	Serial   *consoleConfig  `json:"serial,omitempty"`
	Console  *consoleConfig  `json:"console,omitempty"`
	Vsock    *vsockConfig    `json:"vsock,omitempty"`
	Platform *platformConfig `json:"platform,omitempty"`
}

// cpusConfig: boot_vcpus and max_vcpus are both required.
type cpusConfig struct {
	BootVcpus uint32 `json:"boot_vcpus"`
	MaxVcpus  uint32 `json:"max_vcpus"`
}

// memoryConfig: size (bytes) is required.
type memoryConfig struct {
	Size uint64 `json:"size"`
}

// payloadConfig: Cloud Hypervisor needs at least one of kernel, firmware or
// igvm. host_data is SNP's HOST_DATA as exactly 64 hex characters.
type payloadConfig struct {
	Firmware  string `json:"firmware,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	Cmdline   string `json:"cmdline,omitempty"`
	Initramfs string `json:"initramfs,omitempty"`
	IGVM      string `json:"igvm,omitempty"`
	HostData  string `json:"host_data,omitempty"`
}

// diskConfig is one virtio-blk disk, at boot or through vm.add-disk.
type diskConfig struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
	ID       string `json:"id"`
	// Serial is what the guest sees as the virtio-blk serial; the agent finds
	// disks by it.
	Serial string `json:"serial"`
	// ImageType is pinned to "Raw": left out, Cloud Hypervisor probes the
	// file's format, and a disk whose content the guest controls must never
	// be read as qcow2.
	ImageType string `json:"image_type"`
}

// netConfig is one virtio-net device (schema NetConfig), sent with PUT
// vm.add-net together with its tap's fd (see addNICs). What an fd-backed
// tap needs in Cloud Hypervisor v53 (vmm/src/vm_config.rs, config.rs,
// device_manager.rs):
//   - tap unset: a tap name wins over fds, and names resolve in the VMM's
//     own (host) network namespace, not the pod's;
//   - no fds in the body: numbers there are discarded; only descriptors
//     attached to the request (SCM_RIGHTS) count;
//   - num_queues = 2 × the number of fds (one rx/tx queue pair per fd),
//     at most 2 × boot_vcpus;
//   - no mtu: the VMM would set it with SIOCSIFMTU by the tap's name, in
//     its own namespace, where the pod's tap is not (boot fails, or a
//     host interface of that name changes). The host sets the tap's MTU in
//     the pod's namespace and the agent sets the guest's.
//
// queue_size keeps the VMM's default (256).
type netConfig struct {
	ID        string `json:"id"`
	MAC       string `json:"mac"`
	NumQueues int    `json:"num_queues"`
}

// consoleConfig is SerialConfig / ConsoleConfig (mode required; "Off",
// "Pty", "Tty", "File", "Socket", "Null").
type consoleConfig struct {
	Mode string `json:"mode"`
	File string `json:"file,omitempty"`
}

// vsockConfig: cid (>= 3) and socket are required. The CID is private to
// this VM's hybrid vsock socket, so every VM may use the same one.
type vsockConfig struct {
	CID    uint32 `json:"cid"`
	Socket string `json:"socket"`
}

// platformConfig selects the confidential platform.
type platformConfig struct {
	TDX    bool `json:"tdx,omitempty"`
	SevSnp bool `json:"sev_snp,omitempty"`
}

// diskRemove is the body of PUT vm.remove-device (schema VmRemoveDevice).
type diskRemove struct {
	ID string `json:"id"`
}

// pciDeviceInfo answers a hot-plug (schema PciDeviceInfo; id and bdf required).
type pciDeviceInfo struct {
	ID  string `json:"id"`
	BDF string `json:"bdf"`
}

// pingResponse answers GET vmm.ping (schema VmmPingResponse).
type pingResponse struct {
	BuildVersion string   `json:"build_version"`
	Version      string   `json:"version"`
	PID          int64    `json:"pid"`
	Features     []string `json:"features"`
}

// vmInfo answers GET vm.info (schema VmInfo); only the state is read.
type vmInfo struct {
	State string `json:"state"`
}

const (
	guestCID = 3 // lowest CID a guest may have; see vsockConfig

	apiSocketName   = "clh.sock"
	vsockSocketName = "vsock.sock"
	consoleLogName  = "console.log"  // capped copy of the console (hypervisor.Console)
	consolePipeName = "console.pipe" // FIFO the VMM writes the console into
	vmmLogName      = "clh.log"

	// maxSerialLen is the virtio-blk serial size (VIRTIO_BLK_ID_BYTES).
	maxSerialLen = 20
	// maxUnixPath is sun_path minus its terminating NUL. Cloud Hypervisor
	// also listens on <vsock socket>_<port> for guest-initiated streams, so
	// leave room for that suffix.
	maxUnixPath = 107
	vsockSuffix = len("_4294967295")
)

// plan is everything New derives from a hypervisor.Config.
type plan struct {
	body vmConfig
	// nets are the vm.add-net bodies, one per NIC in the order of the
	// VM's NICs; they are not part of body (see addNICs).
	nets  []netConfig
	notes []string
}

// invalid wraps a configuration error as errdefs.ErrInvalidArgument.
func invalid(format string, args ...any) error {
	return fmt.Errorf("clh: "+format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

// checkHostFile returns an error naming the setting and path when path is
// not an existing regular file.
func checkHostFile(what, path string) error {
	if path == "" {
		return invalid("%s is not set", what)
	}
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return invalid("%s %q does not exist: install it or fix the path", what, path)
		}
		return invalid("%s %q: %v", what, path, err)
	}
	if !st.Mode().IsRegular() {
		return invalid("%s %q is not a regular file", what, path)
	}
	return nil
}

// buildPlan validates cfg and turns it into the vm.create body. Every
// check that can fail without running anything happens here, so New
// reports bad configuration before a process exists.
//
// missing decides what a host file that is absent means: New passes nil
// (an error), Plan collects a note so the launch can be shown anywhere.
func buildPlan(cfg hypervisor.Config, missing *[]string) (*plan, error) {
	if cfg.Driver != "" && cfg.Driver != "clh" {
		return nil, invalid("driver %q: this driver is \"clh\"", cfg.Driver)
	}
	checkFile := func(what, path string) error {
		err := checkHostFile(what, path)
		if err != nil && missing != nil && path != "" {
			*missing = append(*missing, fmt.Sprintf("not on this host: %v", err))
			return nil
		}
		return err
	}
	if err := checkFile("hypervisor binary (path)", cfg.Path); err != nil {
		return nil, err
	}
	if st, err := os.Stat(cfg.Path); err == nil && st.Mode().Perm()&0o111 == 0 {
		return nil, invalid("hypervisor binary (path) %q is not executable", cfg.Path)
	}
	if cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return nil, invalid("state directory %q must be an absolute path", cfg.StateDir)
	}
	if n := len(filepath.Join(cfg.StateDir, vsockSocketName)) + vsockSuffix; n > maxUnixPath {
		return nil, invalid("state directory %q is too long for unix sockets (%d > %d bytes): use a shorter state directory", cfg.StateDir, n, maxUnixPath)
	}
	if err := cfg.CheckSize(); err != nil {
		return nil, invalid("%v", err)
	}
	if cfg.Accel != "" && cfg.Accel != "auto" && cfg.Accel != "kvm" {
		return nil, invalid("accel %q: Cloud Hypervisor needs KVM; use \"auto\" or \"kvm\", or the QEMU driver for TCG", cfg.Accel)
	}

	p := &plan{body: vmConfig{
		// max == boot always: no vCPU hot-plug, which TDX requires anyway.
		Cpus:   cpusConfig{BootVcpus: cfg.VCPUs, MaxVcpus: cfg.VCPUs},
		Memory: memoryConfig{Size: uint64(cfg.MemoryMiB) << 20},
		Payload: payloadConfig{
			Kernel:    cfg.Kernel,
			Initramfs: cfg.Initrd,
			Cmdline:   cfg.KernelParams,
			Firmware:  cfg.Firmware,
			IGVM:      cfg.IGVM,
		},
		Serial:  &consoleConfig{Mode: "File", File: filepath.Join(cfg.StateDir, consolePipeName)},
		Console: &consoleConfig{Mode: "Off"},
		Vsock:   &vsockConfig{CID: guestCID, Socket: filepath.Join(cfg.StateDir, vsockSocketName)},
	}}

	for _, f := range []struct{ what, path string }{
		{"kernel", cfg.Kernel}, {"initrd", cfg.Initrd}, {"firmware", cfg.Firmware}, {"igvm", cfg.IGVM},
	} {
		if f.path == "" {
			continue
		}
		if err := checkFile(f.what, f.path); err != nil {
			return nil, err
		}
	}
	if cfg.Kernel == "" && cfg.Firmware == "" && cfg.IGVM == "" {
		return nil, invalid("nothing to boot: set kernel (or firmware, or igvm for SNP)")
	}
	if cfg.Initrd != "" && cfg.Kernel == "" {
		return nil, invalid("initrd %q is set but kernel is not", cfg.Initrd)
	}

	if err := p.tee(cfg); err != nil {
		return nil, err
	}
	if err := p.disks(cfg.Disks, checkFile); err != nil {
		return nil, err
	}
	if err := p.setNICs(cfg.NICs, cfg.Disks); err != nil {
		return nil, err
	}
	if cfg.Vsock.Mode != "" && cfg.Vsock.Mode != "auto" {
		p.notes = append(p.notes, fmt.Sprintf("vsock mode %q ignored: Cloud Hypervisor always uses its own hybrid vsock socket", cfg.Vsock.Mode))
	}
	if cfg.Machine != "" || cfg.CPUModel != "" {
		p.notes = append(p.notes, "machine and cpu_model ignored: Cloud Hypervisor has one machine type and passes the host CPU through")
	}
	return p, nil
}

// tee fills platform and the TEE payload fields.
func (p *plan) tee(cfg hypervisor.Config) error {
	kind := cfg.TEE.Kind
	switch kind {
	case "", tee.None:
		if len(cfg.LaunchData) > 0 {
			p.notes = append(p.notes, "init-data digest not bound: TEE none has no launch-data field")
		}
		if cfg.IGVM != "" {
			return invalid("igvm %q is set but TEE is none: igvm is for SNP only", cfg.IGVM)
		}
		return nil

	case tee.SNP:
		if cfg.IGVM == "" {
			return invalid("TEE snp needs an igvm file (Cloud Hypervisor boots SEV-SNP guests only from IGVM): set igvm")
		}
		p.body.Platform = &platformConfig{SevSnp: true}
		if cfg.LaunchData != nil {
			if n := tee.SNP.LaunchDataSize(); len(cfg.LaunchData) != n {
				return invalid("launch data for snp is %d bytes, want %d (the init-data digest fitted to HOST_DATA)", len(cfg.LaunchData), n)
			}
			p.body.Payload.HostData = hex.EncodeToString(cfg.LaunchData)
		}
		if o := cfg.TEE.SNP; o != nil {
			// These are attestation inputs: silently dropping them would let a
			// user believe they are enforced.
			if o.IDBlock != "" || o.IDAuth != "" || o.AuthorKeyEnabled {
				return invalid("snp id_block / id_auth / author_key_enabled have no Cloud Hypervisor field (they belong in the IGVM file): unset them or use the QEMU SNP runtime class")
			}
			if o.Policy != 0 || o.KernelHashes || o.CBitPos != 0 || o.ReducedPhysBits != 0 {
				p.notes = append(p.notes, "snp policy, kernel_hashes, cbitpos and reduced_phys_bits ignored: Cloud Hypervisor takes the guest policy from the IGVM file")
			}
		}
		return nil

	case tee.TDX:
		if cfg.Firmware == "" {
			return invalid("TEE tdx needs firmware (TDVF or td-shim): set firmware")
		}
		if cfg.LaunchData != nil {
			return invalid("TEE tdx with init-data: upstream Cloud Hypervisor has no MRCONFIGID field, so the init-data digest cannot be bound; use the QEMU TDX runtime class")
		}
		p.body.Platform = &platformConfig{TDX: true}
		if o := cfg.TEE.TDX; o != nil && (o.Attributes != 0 || o.SeptVEDisable || o.QuoteGenerationSocket != "") {
			p.notes = append(p.notes, "tdx attributes, sept_ve_disable and quote_generation_socket ignored: Cloud Hypervisor has no such fields")
		}
		return nil
	}
	return invalid("TEE %q is not supported by Cloud Hypervisor (none, snp, tdx are): use a QEMU runtime class", kind)
}

// disks validates boot disks and converts them.
func (p *plan) disks(disks []hypervisor.Disk, checkFile func(what, path string) error) error {
	seen := map[string]bool{}
	for i, d := range disks {
		dc, err := diskFor(d, checkFile)
		if err != nil {
			return fmt.Errorf("disks[%d]: %w", i, err)
		}
		if seen[d.ID] {
			return invalid("disks[%d]: id %q is used twice", i, d.ID)
		}
		seen[d.ID] = true
		p.body.Disks = append(p.body.Disks, dc)
	}
	return nil
}

// diskFor checks one disk and returns its DiskConfig.
func diskFor(d hypervisor.Disk, checkFile func(what, path string) error) (diskConfig, error) {
	switch {
	case d.ID == "":
		return diskConfig{}, invalid("disk %q has no id", d.Path)
	case strings.HasPrefix(d.ID, "__"):
		// Cloud Hypervisor reserves identifiers starting with "__".
		return diskConfig{}, invalid("disk id %q must not start with \"__\"", d.ID)
	case len(d.ID) > maxSerialLen:
		return diskConfig{}, invalid("disk id %q is longer than the %d-byte virtio-blk serial", d.ID, maxSerialLen)
	case d.Format != "" && d.Format != "raw":
		return diskConfig{}, invalid("disk %q format %q: only \"raw\" is supported", d.ID, d.Format)
	}
	if err := checkFile("disk "+d.ID, d.Path); err != nil {
		return diskConfig{}, err
	}
	return diskConfig{Path: d.Path, Readonly: d.ReadOnly, ID: d.ID, Serial: d.ID, ImageType: "Raw"}, nil
}
