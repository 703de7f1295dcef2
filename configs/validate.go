package configs

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
	"github.com/coco-runtime/coco/virtcontainers/measure"
)

// Limits that catch typos (a memory size in bytes, a vCPU count of 1000)
// rather than describe any real host.
const (
	maxVCPUs       = 256
	minMemoryMiB   = 128 // below this the guest kernel and initrd do not fit
	maxMemoryMiB   = 1 << 20
	maxBootTimeout = time.Hour
	maxDialTimeout = 10 * time.Minute

	snpPolicyReserved = 1 << 17 // SNP ABI: must be 1
	sevPolicyES       = 1 << 2  // SEV policy: SEV-ES required
	snpIDBlockSize    = 96
	snpIDAuthMax      = 4096
)

// Allowed values, as functions so that no caller can change them.
func drivers() []string    { return []string{"qemu", "clh"} }
func machines() []string   { return []string{"q35", "microvm", "pseries", "s390-ccw-virtio"} }
func accels() []string     { return []string{"auto", "kvm", "tcg"} }
func vsockModes() []string { return []string{"auto", "vhost", "vhost-user"} }
func clhTEEs() []string    { return []string{string(tee.None), string(tee.SNP), string(tee.TDX)} }
func logLevels() []string {
	return []string{"trace", "debug", "info", "warn", "error", "fatal", "panic"}
}
func fsTypes() []string { return []string{"erofs"} }
func teeKinds() []string {
	return []string{string(tee.None), string(tee.SEV), string(tee.SEVES), string(tee.SNP),
		string(tee.TDX), string(tee.SE), string(tee.PEF)}
}

// validate checks every key and the combinations between them. All problems
// are returned at once, each naming file and key.
func (c *Config) validate(file string) error {
	v := &validator{file: file}
	h := &c.Hypervisor
	v.oneOf("hypervisor.driver", h.Driver, drivers())
	v.oneOf("hypervisor.accel", h.Accel, accels())
	if h.Driver == "qemu" {
		v.oneOf("hypervisor.machine", h.Machine, machines())
		v.oneOf("hypervisor.vsock.mode", h.Vsock.Mode, vsockModes())
		if h.Vsock.Mode != "vhost" && h.Vsock.DaemonPath == "" {
			v.add("hypervisor.vsock.daemon_path", "empty; vsock mode %q needs the vhost-device-vsock binary (a name in PATH or an absolute path)", h.Vsock.Mode)
		}
	}
	if h.Driver == "clh" && h.Accel == "tcg" {
		v.add("hypervisor.accel", `"tcg" is not available with driver "clh": Cloud Hypervisor needs KVM; use "auto" or "kvm", or driver "qemu"`)
	}
	if h.VCPUs == 0 || h.VCPUs > maxVCPUs {
		v.add("hypervisor.vcpus", "%d is out of range; allowed 1-%d", h.VCPUs, maxVCPUs)
	}
	if h.MemoryMiB < minMemoryMiB || h.MemoryMiB > maxMemoryMiB {
		v.add("hypervisor.memory_mib", "%d is out of range; allowed %d-%d (MiB, not bytes)", h.MemoryMiB, minMemoryMiB, maxMemoryMiB)
	}
	if h.Kernel == "" {
		v.add("hypervisor.kernel", "empty; name the guest kernel (relative to share_dir, e.g. \"vmlinux\")")
	}
	v.duration("hypervisor.boot_timeout", h.BootTimeout.D(), maxBootTimeout)
	if kib := int64(h.ConsoleLogKiB) << 10; kib < hypervisor.MinConsoleLogMax || kib > hypervisor.MaxConsoleLogMax {
		v.add("hypervisor.console_log_kib", "%d is out of range; allowed %d-%d (KiB, not bytes: 4096 is 4 MiB)",
			h.ConsoleLogKiB, hypervisor.MinConsoleLogMax>>10, hypervisor.MaxConsoleLogMax>>10)
	}
	v.absolute("hypervisor.share_dir", h.ShareDir)

	c.validateTEE(v)

	v.duration("agent.dial_timeout", c.Agent.DialTimeout.D(), maxDialTimeout)
	v.absolute("runtime.state_dir", c.Runtime.StateDir)
	for i, p := range c.Runtime.AnnotationsAllowed {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			v.add(fmt.Sprintf("runtime.annotations_allowed[%d]", i), "%q is not an annotation name or glob (\"*\", \"?\", \"[...]\" as in path.Match)", p)
		}
	}
	v.oneOf("runtime.log_level", c.Runtime.LogLevel, logLevels())
	v.oneOf("rootfs.fstype", c.Rootfs.FSType, fsTypes())
	v.oneOf("volumes.host_dirs", c.Volumes.HostDirs, []string{"", "refuse", "empty"})
	if c.Rootfs.Mkfs == "" {
		v.add("rootfs.mkfs", "empty; name the mkfs.%s binary", c.Rootfs.FSType)
	}
	switch {
	case c.Rootfs.ScratchMiB < 0 || c.Rootfs.ScratchMiB > maxScratchMiB:
		v.add("rootfs.scratch_mib", "%d: want 0 (no scratch disk) to %d", c.Rootfs.ScratchMiB, maxScratchMiB)
	case c.Rootfs.ScratchMiB > 0 && !c.Rootfs.GuestPull:
		v.add("rootfs.scratch_mib", "%d MiB, but only a guest that pulls images uses a scratch disk: set rootfs.guest_pull = true or scratch_mib = 0", c.Rootfs.ScratchMiB)
	}
	return errors.Join(v.errs...)
}

// maxScratchMiB bounds rootfs.scratch_mib (1 TiB): the file is sparse,
// but a typo should not promise the guest more than any node has.
const maxScratchMiB = 1 << 20

func (c *Config) validateTEE(v *validator) {
	h := &c.Hypervisor
	t := &c.TEE
	if !v.oneOf("tee.kind", t.Kind, teeKinds()) {
		return
	}
	kind := tee.Kind(t.Kind)
	if kind.Confidential() && h.Accel == "tcg" {
		v.add("hypervisor.accel", `"tcg" cannot run TEE %q: a TEE needs KVM; use "auto" or "kvm", or tee.kind "none"`, kind)
	}
	if kind.Confidential() && h.ToolsImage != "" {
		v.add("hypervisor.tools_image", "%q with TEE %q: a TEE guest runs only what its measured initrd carries and ignores the tools disk; "+
			`set tools_image = "" and initrd = "initrd.img" (the initrd with runc and coco-policy)`, h.ToolsImage, kind)
	}
	switch h.Driver {
	case "qemu":
		switch kind {
		case tee.SEV, tee.SEVES, tee.SNP, tee.TDX:
			if h.Machine != "q35" {
				v.add("hypervisor.machine", "%q cannot run TEE %q; allowed: \"q35\"", h.Machine, kind)
			}
			if h.Firmware == "" {
				v.add("hypervisor.firmware", "empty; TEE %q boots through firmware (OVMF for SEV/SNP, TDVF for TDX)", kind)
			}
		case tee.SE:
			if h.Machine != "s390-ccw-virtio" {
				v.add("hypervisor.machine", "%q cannot run TEE \"se\"; allowed: \"s390-ccw-virtio\"", h.Machine)
			}
		case tee.PEF:
			if h.Machine != "pseries" {
				v.add("hypervisor.machine", "%q cannot run TEE \"pef\"; allowed: \"pseries\"", h.Machine)
			}
		}
	case "clh":
		if !slices.Contains(clhTEEs(), t.Kind) {
			v.add("tee.kind", "%q is not supported by driver \"clh\"; allowed: %s (or driver \"qemu\")", kind, quoteList(clhTEEs()))
		}
		if kind == tee.SNP && h.IGVM == "" {
			v.add("hypervisor.igvm", "empty; Cloud Hypervisor boots SNP guests from an IGVM file")
		}
		if kind == tee.TDX && h.Firmware == "" {
			v.add("hypervisor.firmware", "empty; Cloud Hypervisor boots TDX guests through firmware (TDVF or td-shim)")
		}
	}

	if h.Driver == "qemu" {
		c.validateMeasuredBoot(v, kind)
	}

	switch kind {
	case tee.SEV, tee.SEVES:
		o := t.SEV
		es := o.Policy&sevPolicyES != 0
		if kind == tee.SEV && es {
			v.add("tee.sev.policy", "%#x sets bit 2 (SEV-ES); use tee.kind \"sev-es\" or clear the bit", o.Policy)
		}
		if kind == tee.SEVES && !es {
			v.add("tee.sev.policy", "%#x lacks bit 2 (0x4), which SEV-ES requires; e.g. %#x", o.Policy, o.Policy|sevPolicyES)
		}
		v.cbit("tee.sev", o.CBitPos, o.ReducedPhysBits)
	case tee.SNP:
		o := t.SNP
		if o.Policy&snpPolicyReserved == 0 {
			v.add("tee.snp.policy", "%#x lacks bit 17 (0x20000), which the SNP ABI reserves as 1; e.g. %#x", o.Policy, o.Policy|snpPolicyReserved)
		}
		v.cbit("tee.snp", o.CBitPos, o.ReducedPhysBits)
		if o.IDBlock != "" {
			if b, err := base64.StdEncoding.DecodeString(o.IDBlock); err != nil || len(b) != snpIDBlockSize {
				v.add("tee.snp.id_block", "must be base64 of exactly %d bytes", snpIDBlockSize)
			}
			if o.IDAuth == "" {
				v.add("tee.snp.id_auth", "empty; an id_block needs its id_auth")
			}
		}
		if o.IDAuth != "" {
			if b, err := base64.StdEncoding.DecodeString(o.IDAuth); err != nil || len(b) > snpIDAuthMax {
				v.add("tee.snp.id_auth", "must be base64 of at most %d bytes", snpIDAuthMax)
			}
		}
		if o.AuthorKeyEnabled && o.IDAuth == "" {
			v.add("tee.snp.author_key_enabled", "true needs tee.snp.id_auth (the author key lives there)")
		}
	case tee.TDX:
		if s := t.TDX.QuoteGenerationSocket; s != "" && !validQGS(s) {
			v.add("tee.tdx.quote_generation_socket", "%q; allowed: \"\", \"vsock:CID:PORT\" or an absolute unix socket path", s)
		}
	}
}

// validateMeasuredBoot checks that a QEMU SEV, SEV-ES or SNP guest has its
// kernel, initrd and command line covered by the launch measurement: QEMU
// puts their hashes into the firmware's hashes page (kernel_hashes), and only
// the AmdSev build of OVMF has that page and refuses a boot that does not
// match it. TDX, SE and PEF firmware measure or seal the boot by other means
// (see their class files).
//
// kernel_hashes = false is an error rather than a warning: the launch digest
// would then cover the firmware alone, so the host could boot any kernel,
// initrd or command line (init=/bin/sh, a TEE-less initrd) under a report a
// verifier accepts. A firmware file that exists and is not the AmdSev build
// is an error too (QEMU would refuse it later with a less helpful message);
// a missing one is left to CheckAssets, since a node may be configured before
// its assets are installed.
func (c *Config) validateMeasuredBoot(v *validator, kind tee.Kind) {
	h := &c.Hypervisor
	var key string
	var on bool
	var mode measure.Mode
	switch kind {
	case tee.SEV, tee.SEVES:
		key, on, mode = "tee.sev.kernel_hashes", c.TEE.SEV.KernelHashes, measure.ModeSEV
	case tee.SNP:
		key, on, mode = "tee.snp.kernel_hashes", c.TEE.SNP.KernelHashes, measure.ModeSNP
	default:
		return
	}
	if !on {
		v.add(key, "false with TEE %q: the launch measurement would cover the firmware only, and the host could boot "+
			"any kernel, initrd or command line unmeasured; set %s = true with the AmdSev OVMF build "+
			"(hypervisor.firmware = %q)", kind, key, measure.AmdSevFirmware)
		return
	}
	fw := h.Firmware
	if fw == "" || !filepath.IsAbs(h.ShareDir) {
		return // reported above
	}
	if !filepath.IsAbs(fw) {
		fw = filepath.Join(h.ShareDir, fw)
	}
	err := measure.CheckFirmwareFile(fw, mode)
	var nk *measure.NoKernelHashesError
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
	case errors.As(err, &nk):
		v.add("hypervisor.firmware", "%s is not the AmdSev build of OVMF: %s; it cannot check the kernel, initrd and command line "+
			"that %s = true measures (and QEMU refuses it). %s", fw, nk.Reason, key, amdSevFix)
	default:
		v.add("hypervisor.firmware", "%v; TEE %q needs the AmdSev build of OVMF there. %s", err, kind, amdSevFix)
	}
}

// amdSevFix says where the AmdSev firmware comes from.
const amdSevFix = `Set firmware = "` + measure.AmdSevFirmware + `" and install it into share_dir: Debian package ovmf-amdsev ` +
	`(/usr/share/ovmf/` + measure.AmdSevFirmware + `): "make firmware" extracts it, "make install" copies it`

// validQGS accepts "vsock:CID:PORT" with 32-bit numbers or an absolute path.
func validQGS(s string) bool {
	if rest, ok := strings.CutPrefix(s, "vsock:"); ok {
		cid, port, ok := strings.Cut(rest, ":")
		if !ok {
			return false
		}
		_, err1 := strconv.ParseUint(cid, 10, 32)
		_, err2 := strconv.ParseUint(port, 10, 32)
		return err1 == nil && err2 == nil
	}
	return filepath.IsAbs(s)
}

type validator struct {
	file string
	errs []error
}

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.file, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) oneOf(key, val string, allowed []string) bool {
	if slices.Contains(allowed, val) {
		return true
	}
	v.add(key, "%q is not allowed; allowed: %s", val, quoteList(allowed))
	return false
}

func (v *validator) duration(key string, d, max time.Duration) {
	if d <= 0 || d > max {
		v.add(key, "%s is out of range; allowed more than 0 and at most %s", d, max)
	}
}

func (v *validator) absolute(key, p string) {
	if !filepath.IsAbs(p) {
		v.add(key, "%q is not an absolute path", p)
	}
}

func (v *validator) cbit(table string, cbitpos, reduced uint32) {
	// The C-bit sits in the physical address bits of a page-table entry.
	if cbitpos < 32 || cbitpos > 63 {
		v.add(table+".cbitpos", "%d is out of range; allowed 32-63 (the host's CPUID 0x8000001F EBX[5:0], e.g. 47 or 51)", cbitpos)
	}
	if reduced < 1 || reduced > 63 {
		v.add(table+".reduced_phys_bits", "%d is out of range; allowed 1-63 (usually 1)", reduced)
	}
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
