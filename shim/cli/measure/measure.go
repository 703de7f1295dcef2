// Package measure is the `containerd-shim-coco-v2 measure` subcommand: it
// precomputes AMD SEV / SEV-ES / SEV-SNP launch digests, with the flags of
// virtee/sev-snp-measure so its users feel at home, and, with --config, the
// reference values (launch digest and init-data binding) of exactly what the
// shim would launch for a runtime class.
package measure

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	vcmeasure "github.com/coco-runtime/coco/virtcontainers/measure"
)

const usageText = `Usage: containerd-shim-coco-v2 measure --mode MODE --ovmf PATH [options]
       containerd-shim-coco-v2 measure --config FILE [--initdata FILE] [overrides]

Computes the AMD SEV launch digest a guest will report, bit-exact with
virtee/sev-snp-measure. The digest alone is printed on stdout.

With --config, measures what the shim would launch for that runtime class
(firmware, kernel, initrd, command line, vCPUs, CPU model) and prints JSON
reference values for a verifier, including the init-data binding. For the
classes whose digest it cannot compute (TDX, Cloud Hypervisor, SE, PEF, no
TEE) the JSON's not_computed names the reason and what a verifier pins
instead; the same line goes to stderr.

Modes: sev, seves, snp, snp:ovmf-hash (the SNP digest of the firmware pages
alone, for --snp-ovmf-hash).
`

// Exit codes: 0 success, 1 the inputs could not be measured, 2 bad usage.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// uintFlag accepts decimal, 0x hex, 0o octal and 0b binary, like
// sev-snp-measure's int(x, 0), and records whether it was given.
type uintFlag struct {
	v   uint64
	set bool
}

func (u *uintFlag) String() string { return strconv.FormatUint(u.v, 10) }
func (u *uintFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return fmt.Errorf("want a number such as 42 or 0x2a")
	}
	u.v, u.set = v, true
	return nil
}

// optString records whether a string flag was given at all: an empty
// --append differs from none only in that it is allowed without --kernel.
type optString struct {
	v   string
	set bool
}

func (o *optString) String() string     { return o.v }
func (o *optString) Set(s string) error { o.v, o.set = s, true; return nil }

type options struct {
	mode, vcpuType, vmmType, output string
	ovmf, kernel, initrd            optString
	appendArg, ovmfHash             optString
	vcpus, vcpuSig                  uintFlag
	family, model, stepping         uintFlag
	guestFeatures                   uintFlag
	verbose                         bool
	config, initdata                string
}

func newFlagSet(stderr io.Writer) (*flag.FlagSet, *options) {
	o := &options{}
	fs := flag.NewFlagSet("measure", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText, "\nOptions:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.mode, "mode", "", "guest mode: sev, seves, snp or snp:ovmf-hash")
	fs.Var(&o.vcpus, "vcpus", "number of guest vCPUs (seves, snp)")
	fs.StringVar(&o.vcpuType, "vcpu-type", "", "guest vCPU type (QEMU -cpu name), one of: "+strings.Join(vcmeasure.CPUTypes(), ", "))
	fs.Var(&o.vcpuSig, "vcpu-sig", "guest vCPU signature (CPUID 1 EAX), e.g. 0x800f12")
	fs.Var(&o.family, "vcpu-family", "guest vCPU family (with --vcpu-model and --vcpu-stepping)")
	fs.Var(&o.model, "vcpu-model", "guest vCPU model")
	fs.Var(&o.stepping, "vcpu-stepping", "guest vCPU stepping")
	fs.StringVar(&o.vmmType, "vmm-type", "QEMU", "VMM whose vCPU reset state to reproduce: QEMU, ec2 or gce")
	fs.Var(&o.ovmf, "ovmf", "OVMF firmware image")
	fs.Var(&o.kernel, "kernel", "kernel measured through the SEV hashes table (kernel-hashes=on)")
	fs.Var(&o.initrd, "initrd", "initrd (needs --kernel)")
	fs.Var(&o.appendArg, "append", "kernel command line (needs --kernel)")
	fs.Var(&o.guestFeatures, "guest-features", "SNP guest features (VMSA SEV_FEATURES), default 0x1")
	fs.Var(&o.ovmfHash, "snp-ovmf-hash", "precomputed SNP OVMF hash (hex, from --mode snp:ovmf-hash)")
	fs.StringVar(&o.output, "output-format", "hex", "digest format: hex or base64")
	fs.BoolVar(&o.verbose, "v", false, "print the digest in a sentence")
	fs.BoolVar(&o.verbose, "verbose", false, "print the digest in a sentence")
	fs.StringVar(&o.config, "config", "", "runtime class configuration file: measure what the shim would launch")
	fs.StringVar(&o.initdata, "initdata", "", "init-data file (TOML, or the annotation's base64(gzip(TOML))) for --config")
	return fs, o
}

// Main runs the subcommand. args excludes the program and subcommand names.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, o := newFlagSet(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	if o.output != "hex" && o.output != "base64" {
		return usageError(stderr, "--output-format %q: want hex or base64", o.output)
	}
	if o.config != "" {
		return runConfig(ctx, o, stdout, stderr)
	}
	if o.initdata != "" {
		return usageError(stderr, "--initdata needs --config")
	}
	if o.mode == "" {
		return usageError(stderr, "--mode is required (sev, seves, snp or snp:ovmf-hash), or use --config")
	}
	if !o.ovmf.set || o.ovmf.v == "" {
		return usageError(stderr, "--ovmf is required")
	}
	digest, usage, err := direct(o)
	if usage {
		return usageError(stderr, "%v", err)
	}
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitError
	}
	if o.mode == "snp:ovmf-hash" {
		// Always hex, whatever --output-format says: it is meant for
		// --snp-ovmf-hash, which takes hex (as in sev-snp-measure).
		fmt.Fprintln(stdout, hex.EncodeToString(digest))
		return exitOK
	}
	printDigest(stdout, o, digest)
	return exitOK
}

func usageError(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "measure: "+format+"\nRun with -h for the options.\n", args...)
	return exitUsage
}

func printDigest(w io.Writer, o *options, d []byte) {
	s := hex.EncodeToString(d)
	if o.output == "base64" {
		s = base64.StdEncoding.EncodeToString(d)
	}
	if o.verbose {
		fmt.Fprintf(w, "Calculated %s guest measurement: %s\n", verboseMode(o.mode), s)
		return
	}
	fmt.Fprintln(w, s)
}

func verboseMode(m string) string {
	switch m {
	case "sev":
		return "SEV"
	case "seves", "sev-es":
		return "SEV_ES"
	}
	return "SEV_SNP"
}

// direct measures from explicit flags. usage reports whether err is a flag
// problem (exit 2) rather than an input that cannot be measured (exit 1).
func direct(o *options) (digest []byte, usage bool, err error) {
	firmware, err := readOVMF(o.ovmf.v)
	if err != nil {
		return nil, false, fmt.Errorf("--ovmf: %w", err)
	}
	if o.mode == "snp:ovmf-hash" {
		return vcmeasure.OVMFHash(firmware), false, nil
	}
	mode, err := vcmeasure.ParseMode(o.mode)
	if err != nil {
		return nil, true, fmt.Errorf("--mode: %v", err)
	}
	if o.initrd.set && !o.kernel.set {
		return nil, true, errors.New("--initrd needs --kernel")
	}
	if o.appendArg.set && o.appendArg.v != "" && !o.kernel.set {
		return nil, true, errors.New("--append needs --kernel")
	}
	if mode != vcmeasure.ModeSEV && !o.vcpus.set {
		return nil, true, fmt.Errorf("--vcpus N is required in mode %s", o.mode)
	}
	vmm, err := vcmeasure.ParseVMMType(o.vmmType)
	if err != nil {
		return nil, true, fmt.Errorf("--vmm-type: %v", err)
	}
	sig, err := vcpuSig(o, mode, vmm)
	if err != nil {
		return nil, true, err
	}
	p := vcmeasure.Params{
		Mode: mode, VCPUs: int(o.vcpus.v), VCPUSig: sig, VMM: vmm,
		GuestFeatures: vcmeasure.GuestFeaturesDefault, Firmware: firmware,
	}
	if o.guestFeatures.set {
		p.GuestFeatures = o.guestFeatures.v
	}
	if o.ovmfHash.set {
		if p.OVMFHash, err = hex.DecodeString(strings.TrimSpace(o.ovmfHash.v)); err != nil {
			return nil, true, fmt.Errorf("--snp-ovmf-hash: not hex: %v", err)
		}
	}
	if o.kernel.set {
		if p.Kernel, err = vcmeasure.HashKernelFiles(o.kernel.v, o.initrd.v, o.appendArg.v); err != nil {
			return nil, false, err
		}
	}
	d, err := vcmeasure.LaunchDigest(p)
	return d, false, err
}

// vcpuSig picks the signature the way sev-snp-measure does: family/model/
// stepping, else --vcpu-sig, else --vcpu-type; QEMU needs one of them
// because it puts the signature in the VMSA, ec2 and gce do not.
func vcpuSig(o *options, mode vcmeasure.Mode, vmm vcmeasure.VMMType) (uint32, error) {
	switch {
	case mode == vcmeasure.ModeSEV:
		return 0, nil
	case o.family.set || o.model.set || o.stepping.set:
		if !(o.family.set && o.model.set && o.stepping.set) {
			return 0, errors.New("--vcpu-family, --vcpu-model and --vcpu-stepping go together")
		}
		if o.family.v > 0xff+0xf || o.model.v > 0xff || o.stepping.v > 0xf {
			return 0, errors.New("--vcpu-family must be at most 270, --vcpu-model at most 255, --vcpu-stepping at most 15")
		}
		return vcmeasure.CPUSig(uint32(o.family.v), uint32(o.model.v), uint32(o.stepping.v)), nil
	case o.vcpuSig.set:
		if o.vcpuSig.v > 0xffffffff {
			return 0, errors.New("--vcpu-sig must fit in 32 bits")
		}
		return uint32(o.vcpuSig.v), nil
	case o.vcpuType != "":
		return vcmeasure.CPUTypeSig(o.vcpuType)
	case vmm == vcmeasure.VMMQEMU:
		return 0, fmt.Errorf("missing --vcpu-type, --vcpu-sig or --vcpu-family in mode %s", mode)
	}
	return 0, nil
}

func readOVMF(path string) (*vcmeasure.OVMF, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	o, err := vcmeasure.ParseOVMF(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return o, nil
}
