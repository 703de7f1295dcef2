package measure

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
	"github.com/coco-runtime/coco/sandbox/vmplan"
)

// NotComputed says why a runtime class has no launch digest here and what a
// verifier takes instead, so that --config answers for every class.
type NotComputed struct {
	Reason string `json:"reason"`
	// Pin lists the report fields or claims a verifier must pin; empty when
	// there is nothing to attest.
	Pin  []string `json:"verifier_must_pin,omitempty"`
	From string   `json:"from"`
}

// String is the one line printed on stderr.
func (n *NotComputed) String() string {
	if len(n.Pin) == 0 {
		return fmt.Sprintf("cannot compute here: %s; a verifier can pin nothing: %s", n.Reason, n.From)
	}
	return fmt.Sprintf("cannot compute here: %s; a verifier must take %s from %s", n.Reason, strings.Join(n.Pin, ", "), n.From)
}

// notComputed returns the reason for every class this tool cannot compute,
// nil for QEMU launches of SEV, SEV-ES and SNP (which it computes).
func notComputed(vmc hypervisor.Config) *NotComputed {
	clh := vmc.Driver == "clh"
	switch vmc.TEE.Kind {
	case tee.SEV, tee.SEVES:
		return nil
	case tee.SNP:
		if !clh {
			return nil
		}
		return &NotComputed{
			Reason: "Cloud Hypervisor launches SNP guests from an IGVM file, and the launch digest covers that file's pages and VMSAs " +
				"(kernel, initrd and command line only if the IGVM carries them); this tool does not parse IGVM files",
			Pin:  []string{"MEASUREMENT", "POLICY (set in the IGVM file)", "HOST_DATA (init_data below)"},
			From: "the tool that built hypervisor.igvm " + vmc.IGVM + " (its launch digest for this vCPU count)",
		}
	case tee.TDX:
		n := &NotComputed{
			Reason: "TDX is measured by the TDX module (MRTD over the firmware's pages) and by the firmware at run time " +
				"(RTMRs over its configuration, the ACPI tables the VMM builds, the kernel, initrd and command line); " +
				"this tool models neither TDVF nor the VMM's ACPI tables",
			Pin: []string{"MRTD", "RTMR[0]", "RTMR[1]", "RTMR[2]", "MRCONFIGID (init_data below)", "TD ATTRIBUTES without DEBUG"},
			From: "a TD quote of a known-good launch of this class, or a TDX measurement tool run on hypervisor.firmware " +
				vmc.Firmware + ", the kernel, initrd and command line in launch",
		}
		if clh {
			n.Pin[4] = "MRCONFIGID (all zeros: Cloud Hypervisor has no field for it)"
		}
		return n
	case tee.SE:
		return &NotComputed{
			Reason: "an SE attestation measurement is an HMAC keyed by each attestation request; the SE image " +
				"(hypervisor.kernel) carries kernel, initrd and command line under its header's integrity tag",
			Pin:  []string{"se.tag", "se.image_phkh", "se.attestation_phkh", "se.version"},
			From: "the SE header of " + vmc.Kernel + " (pvextract-hdr, then Trustee's se_parse_hdr.py with the host key document)",
		}
	case tee.PEF:
		return &NotComputed{
			Reason: "PEF has no remote attestation report: the ultravisor checks the ESM blob in the kernel, which seals " +
				"the digests of kernel, initrd and command line to the host's TPM",
			From: "Trustee has no PEF verifier; trust rests on the ESM blob being built for this kernel, initrd and command line",
		}
	}
	return &NotComputed{
		Reason: fmt.Sprintf("tee.kind %q runs no TEE, so nothing is measured or attested", vmc.TEE.Kind),
		From:   "use a TEE runtime class for a confidential pod",
	}
}

// launchOf describes what a class boots when no digest is computed, read
// from what the driver would launch: the QEMU argv, or the Cloud Hypervisor
// vm.create body (whose payload it is).
func launchOf(plan *vmplan.Plan, command commandFunc, rep *Report) (*Launch, error) {
	lines, notes, err := command(plan)
	if err != nil {
		return nil, err
	}
	for _, n := range notes {
		rep.Notes = append(rep.Notes, "driver: "+n)
	}
	l, err := ReadLaunch(plan.VM.Driver, lines)
	if err != nil {
		return nil, err
	}
	l.Mode = string(plan.VM.TEE.Kind)
	return l, nil
}

// ReadLaunch reads what a launch boots from the lines a driver's Command
// gives: the QEMU argv, or the Cloud Hypervisor vm.create body.
func ReadLaunch(driver string, lines []string) (*Launch, error) {
	if driver == "clh" {
		return launchFromBody(lines)
	}
	return launchFromArgv(lines)
}

// launchFromBody reads the boot payload and vCPUs from a Cloud Hypervisor
// vm.create body.
func launchFromBody(lines []string) (*Launch, error) {
	var body struct {
		Cpus struct {
			BootVcpus int `json:"boot_vcpus"`
		} `json:"cpus"`
		Payload struct {
			Firmware, Kernel, Cmdline, Initramfs, IGVM string
		} `json:"payload"`
	}
	if err := json.Unmarshal([]byte(strings.Join(lines, "\n")), &body); err != nil {
		return nil, fmt.Errorf("read the Cloud Hypervisor vm.create body: %w", err)
	}
	p := body.Payload
	return &Launch{Firmware: p.Firmware, IGVM: p.IGVM, Kernel: p.Kernel, Initrd: p.Initramfs, Cmdline: p.Cmdline, VCPUs: body.Cpus.BootVcpus}, nil
}
