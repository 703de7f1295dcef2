package measure

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor/tee"
	"github.com/coco-runtime/coco/sandbox/vmplan"
	"github.com/coco-runtime/coco/shim/cli/vmcommand"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
	vcmeasure "github.com/coco-runtime/coco/virtcontainers/measure"
)

// Report is the JSON printed for --config: what was measured, the launch
// digest, the init-data binding, and the same values as reference values in
// the shape Trustee's reference value provider ingests (a "sample" message
// whose payload is base64 of {name: [values]}).
type Report struct {
	RuntimeClass string  `json:"runtime_class"`
	Config       string  `json:"config"`
	TEE          string  `json:"tee"`
	Launch       *Launch `json:"launch,omitempty"`
	Measurement  *Digest `json:"measurement"`
	// NotComputed is set instead of Measurement for the classes whose
	// launch digest this tool cannot compute.
	NotComputed *NotComputed `json:"not_computed,omitempty"`
	InitData    *InitDataRef `json:"init_data,omitempty"`
	// ReferenceValues use the claim names and encodings of Trustee's
	// verifiers: snp_launch_measurement and init_data are base64, as the SNP
	// verifier reports measurement and host_data.
	ReferenceValues map[string][]string `json:"reference_values"`
	RVPS            RVPSMessage         `json:"rvps_message"`
	Notes           []string            `json:"notes,omitempty"`
}

// Launch is what the measurement covers, as the VMM is told.
type Launch struct {
	Mode          string `json:"mode"`
	Firmware      string `json:"firmware,omitempty"`
	IGVM          string `json:"igvm,omitempty"`
	Kernel        string `json:"kernel,omitempty"`
	Initrd        string `json:"initrd,omitempty"`
	Cmdline       string `json:"cmdline"`
	KernelHashes  bool   `json:"kernel_hashes,omitempty"`
	VCPUs         int    `json:"vcpus"`
	CPUModel      string `json:"cpu_model,omitempty"`
	VCPUSig       string `json:"vcpu_sig,omitempty"`
	VMMType       string `json:"vmm_type,omitempty"`
	GuestFeatures string `json:"guest_features,omitempty"`
}

// Digest is a hash in both encodings verifiers use.
type Digest struct {
	Algorithm string `json:"algorithm"`
	Hex       string `json:"hex"`
	Base64    string `json:"base64"`
}

// InitDataRef is the init-data digest and how it is bound.
type InitDataRef struct {
	Source string `json:"source"`
	Digest Digest `json:"digest"`
	// Field is the TEE field that binds it ("" when none does).
	Field            string `json:"field,omitempty"`
	LaunchDataHex    string `json:"launch_data_hex,omitempty"`
	LaunchDataBase64 string `json:"launch_data_base64,omitempty"`
	Note             string `json:"note,omitempty"`
}

// RVPSMessage is a Trustee RVPS registration message of type "sample".
type RVPSMessage struct {
	Version string `json:"version"`
	Type    string `json:"type"`
	Payload string `json:"payload"`
}

// commandFunc returns the VMM argv (QEMU) the driver would run for a plan
// and the driver's notes about it; tests replace it.
type commandFunc func(p *vmplan.Plan) (argv, notes []string, err error)

func runConfig(ctx context.Context, o *options, stdout, stderr io.Writer) int {
	for name, set := range map[string]bool{"--mode": o.mode != "", "--ovmf": o.ovmf.set, "--kernel": o.kernel.set,
		"--initrd": o.initrd.set, "--append": o.appendArg.set, "--vcpus": o.vcpus.set, "--snp-ovmf-hash": o.ovmfHash.set} {
		if set {
			return usageError(stderr, "%s cannot be combined with --config: the configuration decides it", name)
		}
	}
	rep, err := configReport(o, (*vmplan.Plan).Command)
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitError
	}
	if rep.NotComputed != nil {
		// Still a success: the report names the reason and what a verifier
		// pins instead, and carries the init-data binding.
		fmt.Fprintf(stderr, "measure: %s: %s\n", rep.RuntimeClass, rep.NotComputed)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitError
	}
	return exitOK
}

func configReport(o *options, command commandFunc) (*Report, error) {
	cfg, err := configs.Load(o.config)
	if err != nil {
		return nil, err
	}
	// The plan the shim launches for a pod of this class (nothing is
	// created: a plan only names its paths).
	plan, err := vmplan.New(cfg, vmcommand.Pod(vmcommand.DefaultID, o.initdata))
	if err != nil {
		return nil, err
	}
	kind := plan.VM.TEE.Kind
	rep := &Report{RuntimeClass: cfg.Name, Config: o.config, TEE: string(kind), ReferenceValues: map[string][]string{}}
	if id := plan.InitData; id != nil {
		ld := plan.VM.LaunchData
		d := id.Doc.Digest()
		rep.InitData = &InitDataRef{Source: id.Source, Digest: digestOf(string(id.Doc.Algorithm), d),
			Field: initdata.FieldName(kind), Note: id.Note}
		if ld != nil {
			rep.InitData.LaunchDataHex = hex.EncodeToString(ld)
			rep.InitData.LaunchDataBase64 = base64.StdEncoding.EncodeToString(ld)
			rep.ReferenceValues["init_data"] = []string{rep.InitData.LaunchDataBase64}
		} else {
			// Without a hardware field the verifier compares the digest of
			// the init-data the guest sends.
			rep.ReferenceValues["init_data"] = []string{base64.StdEncoding.EncodeToString(d)}
		}
	}

	if err := measureConfig(o, plan, command, rep); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(rep.ReferenceValues)
	if err != nil {
		return nil, err
	}
	rep.RVPS = RVPSMessage{Version: "0.1.0", Type: "sample", Payload: base64.StdEncoding.EncodeToString(payload)}
	return rep, nil
}

// measureConfig fills the launch and measurement for QEMU launches of the
// SEV family; other classes get NotComputed with the reason and what a
// verifier pins instead.
func measureConfig(o *options, plan *vmplan.Plan, command commandFunc, rep *Report) error {
	vmc := plan.VM
	kind := vmc.TEE.Kind
	if n := notComputed(vmc); n != nil {
		l, err := launchOf(plan, command, rep)
		if err != nil {
			return fmt.Errorf("resolve the VM of %s: %w", o.config, err)
		}
		rep.Launch, rep.NotComputed = l, n
		return nil
	}
	var mode vcmeasure.Mode
	var kernelHashes bool
	switch kind {
	case tee.SEV, tee.SEVES:
		mode = vcmeasure.ModeSEV
		if kind == tee.SEVES || vmc.TEE.SEV != nil && vmc.TEE.SEV.Policy&tee.SEVPolicyES != 0 {
			mode = vcmeasure.ModeSEVES
		}
		kernelHashes = vmc.TEE.SEV != nil && vmc.TEE.SEV.KernelHashes
	case tee.SNP:
		mode = vcmeasure.ModeSNP
		kernelHashes = vmc.TEE.SNP != nil && vmc.TEE.SNP.KernelHashes
	}
	argv, notes, err := command(plan)
	if err != nil {
		return fmt.Errorf("resolve the VM of %s: %w", o.config, err)
	}
	for _, n := range notes {
		rep.Notes = append(rep.Notes, "driver: "+n)
	}
	l, err := launchFromArgv(argv)
	if err != nil {
		return err
	}
	l.Mode, l.KernelHashes = string(mode), kernelHashes
	vmm, err := vcmeasure.ParseVMMType(o.vmmType)
	if err != nil {
		return err
	}
	l.VMMType = string(vmm)
	if l.Firmware == "" {
		return fmt.Errorf("%s: tee.kind %q boots through firmware but hypervisor.firmware is empty", o.config, kind)
	}
	firmware, err := readOVMF(l.Firmware)
	if err != nil {
		return fmt.Errorf("hypervisor.firmware: %w (the digest covers the firmware's bytes: install %s into share_dir, "+
			"or point $%s at a directory that holds the class's firmware, kernel and initrd)", err, vcmeasure.AmdSevFirmware, configs.EnvShareDir)
	}
	if kernelHashes {
		if err := firmware.CheckKernelHashes(mode); err != nil {
			return fmt.Errorf("hypervisor.firmware: %s: %w; use the AmdSev build of OVMF (%s)", l.Firmware, err, vcmeasure.AmdSevFirmware)
		}
	}
	p := vcmeasure.Params{Mode: mode, VCPUs: l.VCPUs, VMM: vmm, Firmware: firmware, GuestFeatures: vcmeasure.GuestFeaturesDefault}
	if mode == vcmeasure.ModeSNP {
		if o.guestFeatures.set {
			p.GuestFeatures = o.guestFeatures.v
		}
		l.GuestFeatures = "0x" + strconv.FormatUint(p.GuestFeatures, 16)
	}
	if mode != vcmeasure.ModeSEV {
		// Flags override the configured CPU model, e.g. when it is "host".
		if o.vcpuType == "" && !o.vcpuSig.set && !o.family.set {
			o.vcpuType = strings.SplitN(l.CPUModel, ",", 2)[0]
		}
		if p.VCPUSig, err = vcpuSig(o, mode, vmm); err != nil {
			return fmt.Errorf("vcpu signature for hypervisor.cpu_model %q: %w; pass --vcpu-type or --vcpu-sig", l.CPUModel, err)
		}
		l.VCPUSig = "0x" + strconv.FormatUint(uint64(p.VCPUSig), 16)
	}
	if kernelHashes && l.Kernel != "" {
		if p.Kernel, err = vcmeasure.HashKernelFiles(l.Kernel, l.Initrd, l.Cmdline); err != nil {
			return fmt.Errorf("hypervisor.kernel/initrd: %w", err)
		}
	} else if l.Kernel != "" {
		rep.Notes = append(rep.Notes, "kernel_hashes is off: the kernel, initrd and command line are NOT part of the launch digest")
	}
	d, err := vcmeasure.LaunchDigest(p)
	if err != nil {
		return err
	}
	rep.Launch = l
	alg, name := "sha256", "sev_launch_measurement"
	if mode == vcmeasure.ModeSNP {
		alg, name = "sha384", "snp_launch_measurement"
	}
	rep.Measurement = ptr(digestOf(alg, d))
	rep.ReferenceValues[name] = []string{rep.Measurement.Base64}
	return nil
}

func ptr[T any](v T) *T { return &v }

func digestOf(alg string, d []byte) Digest {
	return Digest{Algorithm: alg, Hex: hex.EncodeToString(d), Base64: base64.StdEncoding.EncodeToString(d)}
}

// launchFromArgv reads what the measurement covers from the QEMU argv the
// driver emits, so the digest follows the driver's own command line (which
// adds console and panic settings to kernel_params) rather than a guess.
func launchFromArgv(argv []string) (*Launch, error) {
	l := &Launch{VCPUs: 1}
	for i := 0; i < len(argv); i++ {
		flag := argv[i]
		if !strings.HasPrefix(flag, "-") {
			continue
		}
		if i+1 >= len(argv) {
			break
		}
		val := argv[i+1]
		switch flag {
		case "-bios":
			l.Firmware = val
		case "-kernel":
			l.Kernel = val
		case "-initrd":
			l.Initrd = val
		case "-append":
			l.Cmdline = val
		case "-cpu":
			l.CPUModel = val
		case "-smp":
			n, err := smpCPUs(val)
			if err != nil {
				return nil, err
			}
			l.VCPUs = n
		default:
			continue
		}
		i++
	}
	return l, nil
}

// smpCPUs parses "-smp N" or "-smp cpus=N,...".
func smpCPUs(v string) (int, error) {
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimPrefix(part, "cpus=")
		if n, err := strconv.Atoi(part); err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, errors.New("cannot read the vCPU count from -smp " + v)
}
