//go:build linux

// Package trust decides how much the guest may believe the host. A guest
// is a TEE guest when its measured boot says so — the initrd carries
// MarkerPath, and the initrd is part of the launch measurement a verifier
// checks — never because a device node is or is not there: a host that
// hides a device must not turn a confidential guest into a trusting one.
// What the host can show (a kernel parameter, a TEE device) may only make
// the guest stricter.
//
// A TEE guest defaults to the TEE policy, never mounts the host's tools
// disk, accepts a host policy only when the owner's policy allows it, and
// refuses to run containers unless it can read its own attestation report
// and that report binds the init-data it was given.
package trust

import (
	"errors"
	"io/fs"
	"os"
	"strings"
)

// MarkerPath is the file the TEE initrd carries (mkinitrd -tee). Its
// content is informational; its presence decides.
const MarkerPath = "/etc/coco/tee"

// CmdlineParam is a kernel parameter (coco.tee=<kind>) that makes a guest
// built without the marker stricter; it can never make one laxer.
const CmdlineParam = "coco.tee"

// devices are TEE guest interfaces whose presence also makes the guest a
// TEE guest. Their absence proves nothing: drivers load late or are
// missing, and SEV, SEV-ES, SE and PEF guests have none.
// /sys/kernel/config/tsm/report is not one: a kernel with TSM_REPORTS built
// in (ours, GUEST_KERNEL=own) has it in every VM, provider or not (creating
// a report there then fails with ENXIO); its x86 providers, the SNP and TDX
// guest drivers, have the device nodes listed here.
var devices = []string{"/dev/sev-guest", "/dev/tdx_guest", "/dev/tdx-guest"}

// Mode is the guest's trust mode.
type Mode struct {
	TEE bool
	// Why names what made the guest a TEE guest ("" in a plain VM).
	Why string
}

// Detect reads the mode: the marker in root (the initrd's "/"), the kernel
// command line, and TEE devices under root.
func Detect(root, cmdline string) Mode {
	_, err := os.Stat(root + MarkerPath)
	switch {
	case err == nil:
		return Mode{TEE: true, Why: "the measured initrd carries " + MarkerPath}
	case !errors.Is(err, fs.ErrNotExist):
		// Unreadable is not absent: fail closed.
		return Mode{TEE: true, Why: "cannot tell whether the initrd carries " + MarkerPath + ": " + err.Error()}
	}
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, CmdlineParam+"="); ok && v != "" && v != "none" {
			return Mode{TEE: true, Why: "kernel parameter " + f}
		}
	}
	for _, d := range devices {
		if _, err := os.Stat(root + d); err == nil {
			return Mode{TEE: true, Why: "the guest has " + d}
		}
	}
	return Mode{}
}
