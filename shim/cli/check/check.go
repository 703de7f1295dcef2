// Package check is `containerd-shim-coco-v2 check`: it tells whether the
// selected runtime class can run on this host, one line per fact, each
// missing fact with its fix.
package check

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor/kvmprobe"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// Exit codes of Main.
const (
	ExitOK       = 0 // the runtime class can run here
	ExitCannot   = 1 // at least one fact it needs is missing
	ExitBadUsage = 2 // bad flags or a configuration that does not load
)

const commandTimeout = 10 * time.Second

// Main runs the check. args are the words after "check" (a leading "check"
// is tolerated): [--config FILE | --class NAME].
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "check" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration `file` (default: $"+configs.EnvConfig+", else the embedded "+configs.DefaultName+")")
	class := fs.String("class", "", "check a shipped runtime `class` instead (e.g. qemu-snp); one of: "+strings.Join(configs.ClassNames(), ", "))
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: containerd-shim-coco-v2 check [--config FILE | --class NAME]\n\n"+
			"Tells whether the runtime class can run on this host; exit status %d if it can, %d if not, %d on bad usage.\n\n",
			ExitOK, ExitCannot, ExitBadUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitBadUsage
	}
	if fs.NArg() > 0 || (*config != "" && *class != "") {
		fs.Usage()
		return ExitBadUsage
	}
	cfg, err := configs.LoadClassOrFile(*class, *config)
	if err != nil {
		fmt.Fprintf(stderr, "check: %v\n", err)
		return ExitBadUsage
	}
	facts := realHost().check(ctx, cfg)
	return report(stdout, cfg, facts)
}

// status of one fact. Info facts do not concern the selected class.
type status int

const (
	statusOK status = iota
	statusInfo
	statusWarn
	statusFail
)

func (s status) String() string {
	return [...]string{"ok", "info", "warn", "FAIL"}[s]
}

type fact struct {
	status status
	name   string
	detail string
	fix    string // shown for warn and FAIL
}

// host is what the check reads; tests replace every part.
type host struct {
	root     string // prefix of /sys and /dev paths
	lookPath func(string) (string, error)
	probe    func(ctx context.Context, qemuPath string) error
	output   func(ctx context.Context, name string, args ...string) (string, error)
}

func realHost() host {
	return host{
		root:     "/",
		lookPath: exec.LookPath,
		probe:    kvmprobe.Probe,
		output: func(ctx context.Context, name string, args ...string) (string, error) {
			ctx, cancel := context.WithTimeout(ctx, commandTimeout)
			defer cancel()
			out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
			return string(out), err
		},
	}
}

func (h host) exists(p string) bool {
	_, err := os.Stat(filepath.Join(h.root, p))
	return err == nil
}

// check gathers the facts for cfg, in the order they are printed.
func (h host) check(ctx context.Context, cfg *configs.Config) []fact {
	kind := tee.Kind(cfg.TEE.Kind)
	hv := cfg.Hypervisor
	source := cfg.Path
	if source == "" {
		source = "embedded configuration-" + cfg.Name + ".toml"
	}
	facts := []fact{{status: statusOK, name: "config",
		detail: fmt.Sprintf("%s (class %s: driver %s, tee %s, accel %s)", source, cfg.Name, hv.Driver, kind, hv.Accel)}}

	vmm, vmmFacts := h.vmm(ctx, cfg, kind)
	facts = append(facts, vmmFacts...)
	facts = append(facts, h.kvm(ctx, cfg, kind, vmm))
	facts = append(facts, h.vsock(cfg))
	facts = append(facts, h.tees(kind)...)
	facts = append(facts, assets(cfg)...)
	facts = append(facts, guestMode(cfg, kind)...)
	facts = append(facts, guestKernel(cfg, kind)...)
	if p, err := h.lookPath(cfg.Rootfs.Mkfs); err != nil {
		facts = append(facts, fact{status: statusFail, name: "mkfs", detail: cfg.Rootfs.Mkfs + " not found",
			fix: "apt-get install erofs-utils (scripts/install-deps.sh), or set rootfs.mkfs"})
	} else {
		facts = append(facts, fact{status: statusOK, name: "mkfs", detail: p})
	}
	return facts
}

// vmm reports the VMM binary, its version and, for QEMU, the TEE objects it
// knows. It returns the binary's path ("" when missing).
func (h host) vmm(ctx context.Context, cfg *configs.Config, kind tee.Kind) (string, []fact) {
	name := cfg.VMMPath()
	path, err := h.lookPath(name)
	if err != nil {
		fix := "install QEMU (scripts/install-deps.sh) or set hypervisor.path"
		if cfg.Hypervisor.Driver == "clh" {
			fix = "install Cloud Hypervisor (built with the features of the TEE) or set hypervisor.path"
		}
		return "", []fact{{status: statusFail, name: "vmm", detail: name + " not found", fix: fix}}
	}
	if cfg.Hypervisor.Driver == "clh" {
		out, _ := h.output(ctx, path, "--version")
		return path, []fact{{status: statusOK, name: "vmm", detail: path + ", " + firstLine(out)}}
	}
	out, err := h.output(ctx, path, "-version")
	version, ok := parseQEMUVersion(out)
	if err != nil || !ok {
		return path, []fact{{status: statusFail, name: "vmm", detail: fmt.Sprintf("%s -version failed: %v %s", path, err, firstLine(out)),
			fix: "reinstall QEMU (scripts/install-deps.sh)"}}
	}
	facts := []fact{{status: statusOK, name: "vmm", detail: fmt.Sprintf("%s, QEMU %s", path, version)}}
	out, err = h.output(ctx, path, "-object", "help")
	types := parseObjectHelp(out)
	if err != nil || len(types) == 0 {
		return path, append(facts, fact{status: statusWarn, name: "qemu-tee", detail: "cannot list QEMU object types: " + firstLine(out),
			fix: "run " + path + " -object help by hand"})
	}
	var have, lack []string
	for _, o := range teeObjects() {
		if types[o] {
			have = append(have, o)
		} else {
			lack = append(lack, o)
		}
	}
	detail := "TEE objects: " + orNone(have) + "; lacks: " + orNone(lack)
	want := teeObject(kind)
	switch {
	case want == "":
		facts = append(facts, fact{status: statusInfo, name: "qemu-tee", detail: detail})
	case types[want]:
		facts = append(facts, fact{status: statusOK, name: "qemu-tee", detail: detail})
	default:
		facts = append(facts, fact{status: statusFail, name: "qemu-tee", detail: fmt.Sprintf("QEMU %s has no %s (needed by tee %s); %s", version, want, kind, detail),
			fix: "install a QEMU that has it (sev-snp-guest: 9.1+, tdx-guest: 10.1+) and set hypervisor.path"})
	}
	return path, facts
}

// kvm decides whether KVM works by a test boot, and how much that matters
// for the class.
func (h host) kvm(ctx context.Context, cfg *configs.Config, kind tee.Kind, vmm string) fact {
	accel := cfg.Hypervisor.Accel
	needed := accel == "kvm" || kind.Confidential() || cfg.Hypervisor.Driver == "clh"
	missing := func(detail, fix string) fact {
		switch {
		case needed:
			return fact{status: statusFail, name: "kvm", detail: detail + "; the class needs KVM", fix: fix}
		case accel == "auto":
			return fact{status: statusWarn, name: "kvm", detail: detail + "; accel \"auto\" will use TCG (software emulation, slow)", fix: fix}
		}
		return fact{status: statusInfo, name: "kvm", detail: detail + " (accel \"tcg\" does not use it)"}
	}
	if !h.exists("/dev/kvm") {
		return missing("/dev/kvm absent", "load kvm_intel or kvm_amd, or enable nested virtualization for this VM")
	}
	probeWith := vmm
	if cfg.Hypervisor.Driver != "qemu" || !strings.Contains(filepath.Base(vmm), "x86_64") {
		probeWith, _ = h.lookPath(kvmprobe.DefaultQEMU)
	}
	if probeWith == "" {
		if needed {
			return fact{status: statusWarn, name: "kvm", detail: "/dev/kvm present; not test-booted (the probe needs " + kvmprobe.DefaultQEMU + ")",
				fix: "install QEMU to let check test-boot KVM"}
		}
		return missing("/dev/kvm present; not test-booted (the probe needs "+kvmprobe.DefaultQEMU+")", "install QEMU to let check test-boot KVM")
	}
	if err := h.probe(ctx, probeWith); err != nil {
		fix := `set accel = "tcg" to skip this probe at every VM start`
		if needed {
			fix = "run on a host whose KVM runs guests (bare metal, or nested virtualization that is not PVM-backed)"
		}
		return missing("/dev/kvm present but not usable: "+err.Error(), fix)
	}
	return fact{status: statusOK, name: "kvm", detail: "/dev/kvm usable (a test guest booted under KVM)"}
}

// vsock reports how the host will reach the guest agent.
func (h host) vsock(cfg *configs.Config) fact {
	if cfg.Hypervisor.Driver == "clh" {
		return fact{status: statusInfo, name: "vsock", detail: "Cloud Hypervisor uses its own hybrid vsock socket"}
	}
	mode := cfg.Hypervisor.Vsock.Mode
	vhost := h.exists("/dev/vhost-vsock")
	daemon, derr := h.lookPath(cfg.Hypervisor.Vsock.DaemonPath)
	vhostFix := "modprobe vhost_vsock"
	daemonFix := "install vhost-device-vsock (scripts/install-deps.sh) or set hypervisor.vsock.daemon_path"
	switch {
	case mode == "vhost" && vhost, mode == "auto" && vhost:
		return fact{status: statusOK, name: "vsock", detail: "/dev/vhost-vsock present (kernel vhost-vsock)"}
	case mode == "vhost":
		return fact{status: statusFail, name: "vsock", detail: "/dev/vhost-vsock absent and hypervisor.vsock.mode is \"vhost\"",
			fix: vhostFix + `, or set mode = "auto" (the shim then serves vsock itself)`}
	case cfg.Hypervisor.Vsock.DaemonPath == "":
		return fact{status: statusOK, name: "vsock", detail: "vhost-user vsock served by the shim (/dev/vhost-vsock absent)"}
	case derr == nil:
		return fact{status: statusOK, name: "vsock", detail: "vhost-user vsock through " + daemon + " (/dev/vhost-vsock absent)"}
	}
	return fact{status: statusFail, name: "vsock", detail: fmt.Sprintf("/dev/vhost-vsock absent and %s not found", cfg.Hypervisor.Vsock.DaemonPath),
		fix: daemonFix + ", or " + vhostFix}
}

// tees reports every TEE the host offers; the selected one decides.
func (h host) tees(kind tee.Kind) []fact {
	var facts []fact
	for _, s := range hostTEEs(h.root) {
		f := fact{name: "tee-" + string(s.Kind)}
		switch {
		case s.Kind == kind && s.OK:
			f.status, f.detail = statusOK, "available ("+s.Detail+")"
		case s.Kind == kind:
			f.status, f.detail, f.fix = statusFail, "not available ("+s.Detail+"), needed by this class", s.Fix
		case s.OK:
			f.status, f.detail = statusInfo, "available ("+s.Detail+")"
		default:
			f.status, f.detail = statusInfo, "not available ("+s.Detail+")"
		}
		facts = append(facts, f)
	}
	// QEMU's sev-guest and sev-snp-guest open /dev/sev.
	if kind == tee.SEV || kind == tee.SEVES || kind == tee.SNP {
		if h.exists("/dev/sev") {
			facts = append(facts, fact{status: statusOK, name: "tee-dev", detail: "/dev/sev present"})
		} else {
			facts = append(facts, fact{status: statusFail, name: "tee-dev", detail: "/dev/sev absent",
				fix: "load the ccp module (modprobe ccp) on an SEV-enabled host"})
		}
	}
	return facts
}

// assets hashes every guest file of the class; the hashes are what the
// launch measurement covers.
func assets(cfg *configs.Config) []fact {
	var facts []fact
	for _, a := range cfg.Assets() {
		sum, n, err := fileSHA256(a.Path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				err = errors.New("missing")
			}
			facts = append(facts, fact{status: statusFail, name: "asset", detail: fmt.Sprintf("%s %s: %v", a.Key, a.Path, err),
				fix: assetFix(a.Key)})
			continue
		}
		facts = append(facts, fact{status: statusOK, name: "asset", detail: fmt.Sprintf("%s %s sha256:%s (%d bytes)", a.Key, a.Path, sum, n)})
	}
	return facts
}

func assetFix(key string) string {
	switch key {
	case "hypervisor.kernel", "hypervisor.initrd", "hypervisor.tools_image":
		return "make guest-assets && make install (or set " + configs.EnvShareDir + " to the directory holding them, e.g. build/guest)"
	case "hypervisor.firmware", "hypervisor.igvm":
		return "install the TEE firmware at that path (not built by make guest-assets), or set " + key
	}
	return "create the file, or set " + key + " to \"\""
}

// report prints the facts and returns the exit code.
func report(w io.Writer, cfg *configs.Config, facts []fact) int {
	failed := 0
	for _, f := range facts {
		line := fmt.Sprintf("%-4s  %-10s %s", f.status, f.name, f.detail)
		if f.fix != "" && (f.status == statusFail || f.status == statusWarn) {
			line += " -- fix: " + f.fix
		}
		fmt.Fprintln(w, line)
		if f.status == statusFail {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(w, "runtime class %s cannot run on this host: %d problem(s) marked FAIL\n", cfg.Name, failed)
		return ExitCannot
	}
	fmt.Fprintf(w, "runtime class %s can run on this host\n", cfg.Name)
	return ExitOK
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
