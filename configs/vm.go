package configs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// resolvePaths makes the asset paths absolute against share_dir, so that
// everything after loading sees one meaning of each path.
func (c *Config) resolvePaths() {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(c.Hypervisor.ShareDir, p)
	}
	h := &c.Hypervisor
	h.Kernel, h.Initrd, h.Firmware, h.IGVM = abs(h.Kernel), abs(h.Initrd), abs(h.Firmware), abs(h.IGVM)
	h.ToolsImage = abs(h.ToolsImage)
	c.Agent.Policy = abs(c.Agent.Policy)
	c.Runtime.InitData = abs(c.Runtime.InitData)
}

// VMMPath is the VMM binary: hypervisor.path, or the driver's default for
// the machine, resolved through PATH when it is a bare name and found there.
func (c *Config) VMMPath() string {
	p := c.Hypervisor.Path
	if p == "" {
		p = defaultVMM(c.Hypervisor.Driver, c.Hypervisor.Machine)
	}
	return lookPath(p)
}

// VsockDaemonPath is hypervisor.vsock.daemon_path resolved like VMMPath;
// empty (the shim serves vsock) stays empty.
func (c *Config) VsockDaemonPath() string {
	if c.Hypervisor.Vsock.DaemonPath == "" {
		return ""
	}
	return lookPath(c.Hypervisor.Vsock.DaemonPath)
}

func defaultVMM(driver, machine string) string {
	if driver == "clh" {
		return "cloud-hypervisor"
	}
	switch machine {
	case "s390-ccw-virtio":
		return "qemu-system-s390x"
	case "pseries":
		return "qemu-system-ppc64"
	}
	return "qemu-system-x86_64"
}

// lookPath keeps a bare name that PATH does not hold, so the driver's error
// at start names what was missing.
func lookPath(p string) string {
	if p == "" || strings.ContainsRune(p, '/') {
		return p
	}
	if abs, err := exec.LookPath(p); err == nil {
		return abs
	}
	return p
}

// VM resolves the configuration into the description a hypervisor driver
// starts in stateDir (absolute; sandbox/vmplan names it). Disks holds the tools
// disk (hypervisor.tools_image) if any; LaunchData and the init-data disk
// are left for the caller (they depend on the pod).
//
// accel "auto" becomes "kvm" for a TEE (a TEE cannot run under TCG) and for
// Cloud Hypervisor; otherwise it stays "auto" for the driver to probe.
func (c *Config) VM(id, stateDir string) (hypervisor.Config, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return hypervisor.Config{}, fmt.Errorf("configs: VM id %q: %w: want a non-empty name without '/'", id, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(stateDir) {
		return hypervisor.Config{}, fmt.Errorf("configs: VM state dir %q: %w: want an absolute path", stateDir, errdefs.ErrInvalidArgument)
	}
	h := c.Hypervisor
	kind := tee.Kind(c.TEE.Kind)
	accel := h.Accel
	if accel == "auto" && (kind.Confidential() || h.Driver == "clh") {
		accel = "kvm"
	}
	machine := h.Machine
	if h.Driver == "clh" {
		machine = "" // Cloud Hypervisor has no machine types
	}
	teeCfg, err := c.teeConfig()
	if err != nil {
		return hypervisor.Config{}, err
	}
	var disks []hypervisor.Disk
	if h.ToolsImage != "" {
		disks = append(disks, hypervisor.Disk{ID: api.ToolsDiskSerial, Path: h.ToolsImage, ReadOnly: true})
	}
	vm := hypervisor.Config{
		ID:           id,
		StateDir:     stateDir,
		Driver:       h.Driver,
		Path:         c.VMMPath(),
		Machine:      machine,
		Accel:        accel,
		CPUModel:     h.CPUModel,
		VCPUs:        h.VCPUs,
		MemoryMiB:    h.MemoryMiB,
		Kernel:       h.Kernel,
		Initrd:       h.Initrd,
		Firmware:     h.Firmware,
		IGVM:         h.IGVM,
		KernelParams: h.KernelParams,
		TEE:          teeCfg,
		Vsock:        hypervisor.Vsock{Mode: h.Vsock.Mode, DaemonPath: c.VsockDaemonPath()},
		BootTimeout:  h.BootTimeout.D(),
		Disks:        disks,
	}
	vm.ConsoleLogMax = int64(h.ConsoleLogKiB) << 10
	vm.MemoryHugePages = h.MemoryHugePages
	return vm, nil
}

// teeConfig builds the typed TEE value: exactly the options of its kind.
func (c *Config) teeConfig() (tee.Config, error) {
	t := c.TEE
	out := tee.Config{Kind: tee.Kind(t.Kind)}
	switch out.Kind {
	case tee.None:
	case tee.SEV, tee.SEVES:
		o := t.SEV
		out.SEV = &o
	case tee.SNP:
		o := t.SNP
		out.SNP = &o
	case tee.TDX:
		o := t.TDX
		out.TDX = &o
	case tee.SE:
		out.SE = &tee.SEOptions{}
	case tee.PEF:
		out.PEF = &tee.PEFOptions{}
	default:
		// Only reachable for a Config built by hand, not loaded.
		return tee.Config{}, &Error{File: c.Source(), Key: "tee.kind",
			Msg: fmt.Sprintf("%q is not allowed; allowed: %s", t.Kind, quoteList(teeKinds()))}
	}
	return out, nil
}

// Source names where the configuration came from, for errors: its file, or
// "embedded configuration-NAME.toml".
func (c *Config) Source() string {
	if c.Path != "" {
		return c.Path
	}
	return "embedded configuration-" + c.Name + ".toml"
}

// Asset is one guest file the configuration refers to.
type Asset struct {
	Key  string // TOML key, e.g. "hypervisor.kernel"
	Path string // absolute
}

// Assets lists the guest files the configuration needs, in a stable order.
// The VMM and helper binaries are not assets.
func (c *Config) Assets() []Asset {
	var out []Asset
	add := func(key, p string) {
		if p != "" {
			out = append(out, Asset{Key: key, Path: p})
		}
	}
	h := c.Hypervisor
	add("hypervisor.kernel", h.Kernel)
	add("hypervisor.initrd", h.Initrd)
	add("hypervisor.tools_image", h.ToolsImage)
	add("hypervisor.firmware", h.Firmware)
	add("hypervisor.igvm", h.IGVM)
	add("agent.policy", c.Agent.Policy)
	add("runtime.initdata", c.Runtime.InitData)
	return out
}

// CheckAssets reports every asset file that is missing or not a regular
// file. Loading does not check them: a node may be configured before the
// guest assets are installed. The error is errdefs.ErrNotFound.
func (c *Config) CheckAssets() error {
	var errs []error
	for _, a := range c.Assets() {
		fi, err := os.Stat(a.Path)
		switch {
		case err == nil && fi.Mode().IsRegular():
			continue
		case err == nil:
			err = errors.New("not a regular file")
		case errors.Is(err, os.ErrNotExist):
			err = errors.New("missing")
		}
		errs = append(errs, fmt.Errorf("%s: %s = %s: %v; %s: %w",
			c.Source(), a.Key, a.Path, err, assetHint(a.Key), errdefs.ErrNotFound))
	}
	return errors.Join(errs...)
}

// assetHint says how the asset behind key gets onto the host.
func assetHint(key string) string {
	switch key {
	case "hypervisor.kernel", "hypervisor.initrd", "hypervisor.tools_image":
		return "build the guest assets with `make guest-assets` and install them with `make install` " +
			"(or point " + EnvShareDir + " at the directory that holds them, e.g. build/guest)"
	case "hypervisor.firmware", "hypervisor.igvm":
		return "install the TEE firmware there (it is not built by `make guest-assets`) or set " + key + " to its absolute path"
	}
	return "create the file or set " + key + " to \"\""
}

// AnnotationAllowed reports whether a pod annotation may be honoured:
// it equals an entry of runtime.annotations_allowed or matches one as a glob.
func (c *Config) AnnotationAllowed(name string) bool {
	for _, p := range c.Runtime.AnnotationsAllowed {
		if p == name {
			return true
		}
		if ok, err := path.Match(p, name); err == nil && ok {
			return true
		}
	}
	return false
}
