package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
	"github.com/coco-runtime/coco/hypervisor/vsock"
)

// The configuration states every default (configs/defaults.toml); the
// daemon's name is the driver's own, for a Config built by hand.
const (
	DefaultDaemon = "vhost-device-vsock"

	// placeholderCID is shown by Command for vhost mode; Start reserves a
	// free CID on /dev/vhost-vsock instead.
	placeholderCID = vsock.MinGuestCID
	// hostCID is the guest CID inside a per-VM vhost-device-vsock: the
	// daemon serves one guest, so any valid CID is unique.
	hostCID = vsock.MinGuestCID
	// maxSocketPath is sun_path's size minus its NUL.
	maxSocketPath = 107
)

// diskIDPattern keeps disk IDs usable as a virtio-blk serial (at most 20
// bytes) and inside QEMU node and device names.
var diskIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,19}$`)

// host is what resolution needs to know about the machine it runs on;
// tests replace it to get the same plan everywhere.
type host struct {
	lookPath    func(string) (string, error)
	stat        func(string) (os.FileInfo, error)
	vhostDevice string // /dev/vhost-vsock
}

func realHost() host {
	return host{lookPath: exec.LookPath, stat: os.Stat, vhostDevice: vsock.DefaultVhostDevice}
}

// resolve validates cfg and turns it into a plan. With strict, the QEMU
// binary, the guest assets, the disks and (in vhost-user mode) the daemon
// must exist; otherwise what is missing becomes a note, so `vm-command`
// can show a launch for another host. Errors name the configuration key.
func resolve(cfg hypervisor.Config, h host, strict bool) (*plan, error) {
	p := &plan{cfg: cfg}
	bad := func(format string, args ...any) (*plan, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{errdefs.ErrInvalidArgument}, args...)...)
	}
	if cfg.ID == "" {
		return bad("VM id is empty")
	}
	if cfg.Driver != "" && cfg.Driver != "qemu" {
		return bad("hypervisor.driver = %q: this is the qemu driver", cfg.Driver)
	}
	if cfg.StateDir == "" || !filepath.IsAbs(cfg.StateDir) {
		return bad("state dir %q: want an absolute path", cfg.StateDir)
	}
	p.paths = paths{
		qmp:       filepath.Join(cfg.StateDir, "qmp.sock"),
		console:   filepath.Join(cfg.StateDir, "console.log"),
		conPipe:   filepath.Join(cfg.StateDir, "console.pipe"),
		log:       filepath.Join(cfg.StateDir, "qemu.log"),
		daemonLog: filepath.Join(cfg.StateDir, "vhost-device-vsock.log"),
		vhostUser: filepath.Join(cfg.StateDir, "vhost-user-vsock.sock"),
		hybrid:    filepath.Join(cfg.StateDir, "vsock.sock"),
	}
	// ListenGuest adds "_<port>" to the hybrid socket: up to 10 digits
	// (api.ReadyPort has 10).
	for _, s := range []string{p.paths.qmp, p.paths.vhostUser, p.paths.hybrid + "_4294967295"} {
		if len(s) > maxSocketPath {
			return bad("state dir %q is too long: socket %q exceeds the %d-byte unix socket path limit; use a shorter state_dir", cfg.StateDir, s, maxSocketPath)
		}
	}

	if cfg.Machine == "" {
		p.cfg.Machine = "q35"
	}
	m, ok := machineFor(p.cfg.Machine)
	if !ok {
		return bad("hypervisor.machine = %q: want \"q35\", \"microvm\", \"pseries\" or \"s390-ccw-virtio\"", cfg.Machine)
	}
	p.machine = m

	p.tee = cfg.TEE.WithDefaults()
	if err := errors.Join(p.tee.Validate(), p.tee.CheckKernelHashes()); err != nil {
		return bad("%v", err)
	}
	if p.confidential() && !slices.Contains(m.tees, p.tee.Kind) {
		return bad("tee.kind = %q cannot run on hypervisor.machine = %q (%s)", p.tee.Kind, m.name, teeMachineHint(p.tee.Kind))
	}

	switch cfg.Accel {
	case "", "auto":
		// Resolved at Start (a KVM probe boot); the plan shows KVM for a
		// TEE, which has no other choice, and the probe's fallback otherwise.
		p.accel = "kvm"
		if !p.confidential() {
			p.accel = "tcg"
			p.notes = append(p.notes, "accel \"auto\": shown as tcg; Start uses kvm when a probe boot under KVM succeeds")
		}
	case "kvm", "tcg":
		p.accel = cfg.Accel
	default:
		return bad("hypervisor.accel = %q: want \"auto\", \"kvm\" or \"tcg\"", cfg.Accel)
	}
	if p.confidential() && p.accel == "tcg" {
		return bad("hypervisor.accel = \"tcg\" with tee.kind = %q: a TEE needs KVM; use accel \"kvm\" or \"auto\", or tee.kind \"none\"", p.tee.Kind)
	}
	p.cpu = cpuModel(cfg.CPUModel, p.accel, p.machine)

	if err := cfg.CheckSize(); err != nil {
		return bad("%v", err)
	}
	if cfg.BootTimeout <= 0 {
		return bad("hypervisor.boot_timeout = %s: want more than 0", cfg.BootTimeout)
	}

	if err := p.checkLaunchData(); err != nil {
		return nil, err
	}

	switch cfg.Vsock.Mode {
	case "", "auto":
		p.mode = modeVhostUser
		// s390 has no vhost-user-vsock-ccw: kernel vhost is the only way.
		if _, err := h.stat(h.vhostDevice); err == nil || m.virtio == "ccw" {
			p.mode = modeVhost
		}
	case modeVhost, modeVhostUser:
		p.mode = cfg.Vsock.Mode
	default:
		return bad("hypervisor.vsock.mode = %q: want \"auto\", \"vhost\" or \"vhost-user\"", cfg.Vsock.Mode)
	}
	if p.mode == modeVhostUser && m.virtio == "ccw" {
		return bad("hypervisor.vsock.mode = %q on %s: QEMU has no vhost-user-vsock-ccw; use \"vhost\"", p.mode, m.name)
	}
	if p.mode == modeVhost {
		p.cid = placeholderCID
	} else {
		p.cid = hostCID
	}
	p.ramFile = cfg.MemoryHugePages && p.mode == modeVhostUser && !p.confidential()

	seen := map[string]bool{}
	for i, d := range cfg.Disks {
		if !diskIDPattern.MatchString(d.ID) {
			return bad("disk %d: id %q: want 1-20 characters of [A-Za-z0-9_-] (it becomes the virtio-blk serial)", i, d.ID)
		}
		if seen[d.ID] {
			return bad("disk %d: id %q used twice", i, d.ID)
		}
		seen[d.ID] = true
		if d.Format != "" && d.Format != "raw" {
			return bad("disk %q: format %q: only \"raw\" is supported", d.ID, d.Format)
		}
		if !filepath.IsAbs(d.Path) {
			return bad("disk %q: path %q: want an absolute path", d.ID, d.Path)
		}
	}
	if err := validateNICs(cfg.NICs); err != nil {
		return nil, err
	}
	if cfg.IGVM != "" {
		return bad("hypervisor.igvm = %q: the qemu driver does not boot IGVM files; use hypervisor.firmware, or driver \"clh\"", cfg.IGVM)
	}
	if cfg.Kernel == "" {
		return bad("hypervisor.kernel is empty: the guest needs a kernel (run `make guest-assets`)")
	}
	if err := p.checkFiles(h, strict); err != nil {
		return nil, err
	}
	return p, nil
}

func teeMachineHint(k tee.Kind) string {
	switch k {
	case tee.SE:
		return "SE needs s390-ccw-virtio"
	case tee.PEF:
		return "PEF needs pseries"
	}
	return string(k) + " needs q35"
}

// cpuModel picks -cpu: the configured model, else "host" under KVM (all of
// the host's features, what TEEs expect) and "max" under TCG (every feature
// TCG emulates). On x86, TCG's "max" leaves out ERMS and FSRM: they tell the
// kernel that byte-wise `rep movsb`/`rep stosb` is its fastest memcpy and
// page clear, which is true of hardware and false of TCG, where each byte is
// a loop iteration. Without them the kernel unpacks the initrd in half the
// time (31 MB: 0.22 s -> 0.12 s of guest time). Software never requires
// either flag; they are speed hints.
func cpuModel(configured, accel string, m machine) string {
	if configured != "" {
		return configured
	}
	if accel == "kvm" {
		return "host"
	}
	if m.x86() {
		return "max,-erms,-fsrm"
	}
	return "max"
}

// checkLaunchData makes sure init-data is either bound in the TEE's field
// or its absence from the launch is said out loud.
func (p *plan) checkLaunchData() error {
	ld := p.cfg.LaunchData
	if len(ld) == 0 {
		return nil
	}
	size := p.tee.Kind.LaunchDataSize()
	if size == 0 {
		p.notes = append(p.notes, fmt.Sprintf("init-data digest not bound at launch: tee.kind %q has no launch-data field; the guest must check init-data against the attestation verifier instead", p.tee.Kind))
		return nil
	}
	if len(ld) != size {
		return fmt.Errorf("%w: launch data is %d bytes, tee.kind %q binds exactly %d (fit the init-data digest with tee.Kind.LaunchDataSize)",
			errdefs.ErrInvalidArgument, len(ld), p.tee.Kind, size)
	}
	return nil
}

// checkFiles resolves the QEMU binary and daemon in PATH and checks that the
// guest assets and disks exist.
func (p *plan) checkFiles(h host, strict bool) error {
	var problems []error
	missing := func(err error) {
		if strict {
			problems = append(problems, err)
		} else {
			p.notes = append(p.notes, "on this host: "+err.Error())
		}
	}
	bin := p.cfg.Path
	if bin == "" {
		bin = p.machine.binary
	}
	p.binary = bin
	if resolved, err := h.lookPath(bin); err != nil {
		missing(fmt.Errorf("hypervisor.path: QEMU binary %q not found (install QEMU, e.g. scripts/install-deps.sh): %w", bin, err))
	} else {
		p.binary = resolved
	}
	if p.mode == modeVhostUser && p.cfg.Vsock.DaemonPath != "" {
		d := p.cfg.Vsock.DaemonPath
		if resolved, err := h.lookPath(d); err != nil {
			missing(fmt.Errorf("hypervisor.vsock.daemon_path: %q not found (install the vhost-device-vsock package, or use vsock mode \"vhost\" where /dev/vhost-vsock exists): %w", d, err))
		} else {
			p.cfg.Vsock.DaemonPath = resolved
		}
	}
	asset := func(key, path string) {
		if path == "" {
			return
		}
		if _, err := h.stat(path); err != nil {
			missing(fmt.Errorf("%s: guest asset %q is missing (run `make guest-assets`, or fix the path): %w", key, path, err))
		}
	}
	asset("hypervisor.kernel", p.cfg.Kernel)
	asset("hypervisor.initrd", p.cfg.Initrd)
	asset("hypervisor.firmware", p.cfg.Firmware)
	for _, d := range p.cfg.Disks {
		if _, err := h.stat(d.Path); err != nil {
			missing(fmt.Errorf("disk %q: %w", d.ID, err))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, errors.Join(problems...))
	}
	return nil
}
