package configs

import (
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
	maxBootTimeout = time.Hour
)

// Allowed values, as functions so that no caller can change them. drivers
// is hypervisor/driver's table (which configs cannot import: the drivers'
// tests load configs); a test keeps the two equal.
func drivers() []string    { return []string{"qemu", "clh"} }
func machines() []string   { return []string{"q35", "microvm", "pseries", "s390-ccw-virtio"} }
func accels() []string     { return []string{"auto", "kvm", "tcg"} }
func vsockModes() []string { return []string{"auto", "vhost", "vhost-user"} }
func clhTEEs() []string    { return []string{string(tee.None), string(tee.SNP), string(tee.TDX)} }
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
	}
	if h.Driver == "clh" && h.Accel == "tcg" {
		v.add("hypervisor.accel", `"tcg" is not available with driver "clh": Cloud Hypervisor needs KVM; use "auto" or "kvm", or driver "qemu"`)
	}
	if h.VCPUs == 0 || h.VCPUs > hypervisor.MaxVCPUs {
		v.add("hypervisor.vcpus", "%d is out of range; allowed 1-%d", h.VCPUs, hypervisor.MaxVCPUs)
	}
	if h.MemoryMiB < hypervisor.MinMemoryMiB || h.MemoryMiB > hypervisor.MaxMemoryMiB {
		v.add("hypervisor.memory_mib", "%d is out of range; allowed %d-%d (MiB, not bytes)", h.MemoryMiB, hypervisor.MinMemoryMiB, hypervisor.MaxMemoryMiB)
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

	for i, p := range c.Runtime.AnnotationsAllowed {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			v.add(fmt.Sprintf("runtime.annotations_allowed[%d]", i), "%q is not an annotation name or glob (\"*\", \"?\", \"[...]\" as in path.Match)", p)
		}
	}
	v.oneOf("volumes.host_dirs", c.Volumes.HostDirs, []string{"", "refuse", "empty", "copy"})
	v.oneOf("network.interfaces", c.Network.Interfaces, []string{"cni", "none"})
	if c.Rootfs.Mkfs == "" {
		v.add("rootfs.mkfs", "empty; name the mkfs.erofs binary (a name in PATH or an absolute path)")
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

	// The options check themselves; a loaded class sets only its kind's.
	tc, err := c.teeConfig()
	if err == nil {
		err = tc.Validate()
	}
	v.addTEE(err)
}

// addTEE adds the problems tee's checks found, each under its key.
func (v *validator) addTEE(err error) {
	for _, e := range unjoin(err) {
		var fe *tee.FieldError
		if errors.As(e, &fe) {
			v.add(fe.Key, "%s", fe.Msg)
		} else {
			v.errs = append(v.errs, e)
		}
	}
}

// unjoin lists the errors an errors.Join holds (err itself otherwise).
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
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
	tc, err := c.teeConfig()
	if err != nil {
		return // reported with tee.kind
	}
	if err := tc.CheckKernelHashes(); err != nil {
		v.addTEE(err)
		return
	}
	var mode measure.Mode
	var key string
	switch kind {
	case tee.SEV, tee.SEVES:
		mode, key = measure.ModeSEV, "tee.sev.kernel_hashes"
	case tee.SNP:
		mode, key = measure.ModeSNP, "tee.snp.kernel_hashes"
	default:
		return
	}
	fw := h.Firmware
	if fw == "" || !filepath.IsAbs(h.ShareDir) {
		return // reported above
	}
	if !filepath.IsAbs(fw) {
		fw = filepath.Join(h.ShareDir, fw)
	}
	err = measure.CheckFirmwareFile(fw, mode)
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

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
