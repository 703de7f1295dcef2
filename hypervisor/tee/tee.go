// Package tee names the trusted execution environments a VM can run in,
// their options, and the size of the launch-data field that binds init-data.
package tee

// Kind is a TEE technology. The zero value is not valid; use None.
type Kind string

const (
	None  Kind = "none"
	SEV   Kind = "sev"
	SEVES Kind = "sev-es"
	SNP   Kind = "snp"
	TDX   Kind = "tdx"
	SE    Kind = "se"  // IBM Secure Execution (s390x)
	PEF   Kind = "pef" // IBM Protected Execution Facility (POWER)
)

// Config selects a TEE and carries the options of that TEE only. Exactly the
// options struct matching Kind may be non-nil.
type Config struct {
	Kind Kind
	SEV  *SEVOptions // SEV and SEV-ES
	SNP  *SNPOptions
	TDX  *TDXOptions
	SE   *SEOptions
	PEF  *PEFOptions
}

// SEVOptions configure QEMU's sev-guest object (SEV and SEV-ES).
type SEVOptions struct {
	Policy          uint32 // guest policy bits; SEV-ES sets bit 2 (0x4)
	CBitPos         uint32
	ReducedPhysBits uint32
	KernelHashes    bool
}

// SNPOptions configure sev-snp-guest.
type SNPOptions struct {
	Policy           uint64 // default 0x30000
	CBitPos          uint32
	ReducedPhysBits  uint32
	KernelHashes     bool
	IDBlock          string // base64, 96 bytes
	IDAuth           string // base64, <= 4096 bytes
	AuthorKeyEnabled bool
}

// TDXOptions configure tdx-guest.
type TDXOptions struct {
	Attributes            uint64
	SeptVEDisable         bool
	QuoteGenerationSocket string // "vsock:CID:PORT" or a unix socket path
}

// SEOptions configure s390-pv-guest (no properties today).
type SEOptions struct{}

// PEFOptions configure pef-guest (no properties today).
type PEFOptions struct{}

// LaunchDataSize is the size in bytes of the hardware field that binds the
// init-data digest at launch (SNP HOST_DATA, TDX MRCONFIGID), or 0 when the
// TEE has no such field and init-data can only be checked by the verifier.
func (k Kind) LaunchDataSize() int {
	switch k {
	case SNP:
		return 32
	case TDX:
		return 48
	}
	return 0
}

// Confidential reports whether the kind is a real TEE.
func (k Kind) Confidential() bool { return k != None && k != "" }
