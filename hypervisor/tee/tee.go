// Package tee names the trusted execution environments a VM can run in,
// their options, and the size of the launch-data field that binds init-data.
package tee

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

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
	// KernelHashes (kernel-hashes=on) puts the kernel, initrd and command
	// line hashes into the launch measurement; Validate requires it.
	KernelHashes bool
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

// Kinds lists every kind in a stable order (for help texts and tests).
func Kinds() []Kind { return []Kind{None, SEV, SEVES, SNP, TDX, SE, PEF} }

// ParseKind maps a configuration string to a Kind; "" means None.
func ParseKind(s string) (Kind, error) {
	if s == "" {
		return None, nil
	}
	for _, k := range Kinds() {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown TEE kind %q: want one of %s", s, kindList())
}

func kindList() string {
	var names []string
	for _, k := range Kinds() {
		names = append(names, strconv.Quote(string(k)))
	}
	return strings.Join(names, ", ")
}

// Default option values, as QEMU documents them (policy) or as current AMD
// parts report them (cbitpos 51, reduced-phys-bits 1 on Milan/Genoa).
const (
	DefaultSEVPolicy       uint32 = 0x1
	DefaultSEVESPolicy     uint32 = 0x5 // NODBG | ES
	DefaultSNPPolicy       uint64 = 0x30000
	DefaultCBitPos         uint32 = 51
	DefaultReducedPhysBits uint32 = 1

	// SEVPolicyES is the SEV guest policy bit that requests SEV-ES.
	SEVPolicyES uint32 = 0x4
	// SNPPolicyReserved is bit 17 of the SNP guest policy, which must be 1.
	SNPPolicyReserved uint64 = 1 << 17
	// TDXAttributeDebug is bit 0 of the TD attributes: an off-TD debugger
	// may read the TD's state. QEMU has no separate "debug" property.
	TDXAttributeDebug uint64 = 1
)

// WithDefaults returns c with the options struct of its kind filled in when
// it is nil, so callers can say just "snp". Set options are left alone.
func (c Config) WithDefaults() Config {
	if c.Kind == "" {
		c.Kind = None
	}
	switch c.Kind {
	case SEV, SEVES:
		if c.SEV == nil {
			p := DefaultSEVPolicy
			if c.Kind == SEVES {
				p = DefaultSEVESPolicy
			}
			c.SEV = &SEVOptions{Policy: p, CBitPos: DefaultCBitPos, ReducedPhysBits: DefaultReducedPhysBits, KernelHashes: true}
		}
	case SNP:
		if c.SNP == nil {
			c.SNP = &SNPOptions{Policy: DefaultSNPPolicy, CBitPos: DefaultCBitPos, ReducedPhysBits: DefaultReducedPhysBits, KernelHashes: true}
		}
	case TDX:
		if c.TDX == nil {
			c.TDX = &TDXOptions{SeptVEDisable: true}
		}
	case SE:
		if c.SE == nil {
			c.SE = &SEOptions{}
		}
	case PEF:
		if c.PEF == nil {
			c.PEF = &PEFOptions{}
		}
	}
	return c
}

// Validate checks that the kind is known, that only its own options are
// set, and that those options are ones QEMU will accept. Errors name the
// option as the configuration file spells it (tee.<kind>.<key>).
func (c Config) Validate() error {
	k, err := ParseKind(string(c.Kind))
	if err != nil {
		return fmt.Errorf("tee.kind: %w", err)
	}
	set := map[string]bool{"sev": c.SEV != nil, "snp": c.SNP != nil, "tdx": c.TDX != nil, "se": c.SE != nil, "pef": c.PEF != nil}
	own := map[Kind]string{SEV: "sev", SEVES: "sev", SNP: "snp", TDX: "tdx", SE: "se", PEF: "pef"}[k]
	for _, name := range []string{"sev", "snp", "tdx", "se", "pef"} {
		if set[name] && name != own {
			return fmt.Errorf("tee: options for %q are set but tee.kind is %q; remove them or change the kind", name, k)
		}
	}
	switch k {
	case SEV, SEVES:
		if c.SEV == nil {
			return fmt.Errorf("tee.sev: options missing for kind %q (use WithDefaults)", k)
		}
		return c.SEV.validate(k)
	case SNP:
		if c.SNP == nil {
			return fmt.Errorf("tee.snp: options missing (use WithDefaults)")
		}
		return c.SNP.validate()
	case TDX:
		if c.TDX == nil {
			return fmt.Errorf("tee.tdx: options missing (use WithDefaults)")
		}
		_, err := c.TDX.QuoteSocket()
		return err
	}
	return nil
}

func checkCBit(prefix string, cbit, reduced uint32) error {
	// The C-bit lies within the physical address width (at most 52 bits on
	// x86-64) and above the 4 KiB page offset.
	if cbit < 32 || cbit > 63 {
		return fmt.Errorf("%s.cbitpos = %d: want the host's C-bit position (CPUID 0x8000001F EBX[5:0], 47 or 51 on current parts)", prefix, cbit)
	}
	if reduced < 1 || reduced > 63 {
		return fmt.Errorf("%s.reduced_phys_bits = %d: QEMU requires it; want the host's value (CPUID 0x8000001F EBX[11:6], usually 1)", prefix, reduced)
	}
	return nil
}

func (o *SEVOptions) validate(k Kind) error {
	es := o.Policy&SEVPolicyES != 0
	if k == SEVES && !es {
		return fmt.Errorf("tee.sev.policy = %#x: kind \"sev-es\" needs bit 2 (0x4) set, e.g. 0x5", o.Policy)
	}
	if k == SEV && es {
		return fmt.Errorf("tee.sev.policy = %#x: bit 2 (0x4) requests SEV-ES; use kind \"sev-es\" or clear the bit", o.Policy)
	}
	if err := checkCBit("tee.sev", o.CBitPos, o.ReducedPhysBits); err != nil {
		return err
	}
	return checkKernelHashes("tee.sev", o.KernelHashes)
}

// checkKernelHashes refuses a QEMU SEV-family launch whose kernel, initrd
// and command line the launch measurement would not cover: without
// kernel-hashes the firmware loads whatever the host passes it.
func checkKernelHashes(prefix string, on bool) error {
	if !on {
		return fmt.Errorf("%s.kernel_hashes = false: the launch measurement would not cover the kernel, initrd and command line, "+
			"which the host could then replace; set it to true (with the AmdSev build of OVMF as firmware)", prefix)
	}
	return nil
}

func (o *SNPOptions) validate() error {
	if o.Policy&SNPPolicyReserved == 0 {
		return fmt.Errorf("tee.snp.policy = %#x: bit 17 (0x20000) is reserved and must be 1, e.g. 0x30000", o.Policy)
	}
	if err := checkCBit("tee.snp", o.CBitPos, o.ReducedPhysBits); err != nil {
		return err
	}
	if o.IDBlock != "" {
		b, err := base64.StdEncoding.DecodeString(o.IDBlock)
		if err != nil {
			return fmt.Errorf("tee.snp.id_block: not base64: %w", err)
		}
		if len(b) != 96 {
			return fmt.Errorf("tee.snp.id_block: decodes to %d bytes, QEMU requires exactly 96", len(b))
		}
		if o.IDAuth == "" {
			return fmt.Errorf("tee.snp.id_auth: required when id_block is set")
		}
	}
	if o.IDAuth != "" {
		if o.IDBlock == "" {
			return fmt.Errorf("tee.snp.id_auth: set without id_block")
		}
		b, err := base64.StdEncoding.DecodeString(o.IDAuth)
		if err != nil {
			return fmt.Errorf("tee.snp.id_auth: not base64: %w", err)
		}
		if len(b) > 4096 {
			return fmt.Errorf("tee.snp.id_auth: decodes to %d bytes, QEMU allows at most 4096", len(b))
		}
	}
	if o.AuthorKeyEnabled && o.IDAuth == "" {
		return fmt.Errorf("tee.snp.author_key_enabled: needs id_auth (the author key lives in it)")
	}
	return checkKernelHashes("tee.snp", o.KernelHashes)
}

// QuoteSocket is TDXOptions.QuoteGenerationSocket parsed: nil when unset,
// else QEMU's SocketAddress ({"type":"vsock","cid":..,"port":..} or
// {"type":"unix","path":..}) ready for JSON.
func (o *TDXOptions) QuoteSocket() (map[string]string, error) {
	s := o.QuoteGenerationSocket
	switch {
	case s == "":
		return nil, nil
	case strings.HasPrefix(s, "vsock:"):
		parts := strings.Split(s, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("tee.tdx.quote_generation_socket = %q: want \"vsock:CID:PORT\"", s)
		}
		for _, p := range parts[1:] {
			if _, err := strconv.ParseUint(p, 10, 32); err != nil {
				return nil, fmt.Errorf("tee.tdx.quote_generation_socket = %q: %q is not a 32-bit number", s, p)
			}
		}
		return map[string]string{"type": "vsock", "cid": parts[1], "port": parts[2]}, nil
	case strings.HasPrefix(s, "/"):
		return map[string]string{"type": "unix", "path": s}, nil
	}
	return nil, fmt.Errorf("tee.tdx.quote_generation_socket = %q: want \"vsock:CID:PORT\" or an absolute unix socket path", s)
}
