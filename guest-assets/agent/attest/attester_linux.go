//go:build linux

package attest

import "github.com/coco-runtime/coco/guest-assets/agent/trust"

// NewSNP reads reports through trust.Report: configfs-tsm, then
// /dev/sev-guest.
func NewSNP() *SNP { return &SNP{Report: trust.Report} }

// NewTDX reads quotes through trust.Report, which for TDX is configfs-tsm
// (Linux 6.7+; the quote is produced by the host's quote generation
// service behind it).
func NewTDX() *TDX { return &TDX{Report: trust.Report} }
