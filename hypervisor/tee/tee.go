// Package tee names the trusted execution environments a VM can run in,
// their options, and the size of the launch-data field that binds init-data.
package tee

import (
	"encoding/base64"
	"errors"
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
	Policy          uint32 `toml:"policy"` // guest policy bits; SEV-ES sets bit 2 (0x4)
	CBitPos         uint32 `toml:"cbitpos"`
	ReducedPhysBits uint32 `toml:"reduced_phys_bits"`
	// KernelHashes (kernel-hashes=on) puts the kernel, initrd and command
	// line hashes into the launch measurement; Validate requires it.
	KernelHashes bool `toml:"kernel_hashes"`
}

// SNPOptions configure sev-snp-guest.
type SNPOptions struct {
	Policy           uint64 `toml:"policy"` // default 0x30000
	CBitPos          uint32 `toml:"cbitpos"`
	ReducedPhysBits  uint32 `toml:"reduced_phys_bits"`
	KernelHashes     bool   `toml:"kernel_hashes"`
	IDBlock          string `toml:"id_block"` // base64, 96 bytes
	IDAuth           string `toml:"id_auth"`  // base64, <= 4096 bytes
	AuthorKeyEnabled bool   `toml:"author_key_enabled"`
}

// TDXOptions configure tdx-guest.
type TDXOptions struct {
	Attributes            uint64 `toml:"attributes"`
	SeptVEDisable         bool   `toml:"sept_ve_disable"`
	QuoteGenerationSocket string `toml:"quote_generation_socket"` // "vsock:CID:PORT" or a unix socket path
}

// The option structs carry the TOML names of the configuration file
// ([tee.sev], [tee.snp], [tee.tdx]): configs decodes straight into them, so
// the checks below are the only ones.

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

// FieldError is a problem with one option, named as the configuration file
// spells it (tee.<kind>.<key>).
type FieldError struct {
	Key string
	Msg string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

func fieldErr(key, format string, args ...any) error {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// AmdSevFirmware is the OVMF build with the SEV hashes page that
// kernel_hashes needs (Debian's ovmf-amdsev).
const AmdSevFirmware = "OVMF.amdsev.fd"

// Validate checks that the kind is known, that only its own options are
// set, and that those options are ones QEMU will accept. Every problem is
// reported (errors.Join of *FieldError).
func (c Config) Validate() error {
	k, err := ParseKind(string(c.Kind))
	if err != nil {
		return &FieldError{Key: "tee.kind", Msg: err.Error()}
	}
	set := map[string]bool{"sev": c.SEV != nil, "snp": c.SNP != nil, "tdx": c.TDX != nil, "se": c.SE != nil, "pef": c.PEF != nil}
	own := map[Kind]string{SEV: "sev", SEVES: "sev", SNP: "snp", TDX: "tdx", SE: "se", PEF: "pef"}[k]
	for _, name := range []string{"sev", "snp", "tdx", "se", "pef"} {
		if set[name] && name != own {
			return fieldErr("tee."+name, "options for %q are set but tee.kind is %q; remove them or change the kind", name, k)
		}
	}
	if own != "" && !set[own] {
		return fieldErr("tee."+own, "options missing for kind %q (use WithDefaults)", k)
	}
	switch k {
	case SEV, SEVES:
		return c.SEV.validate(k)
	case SNP:
		return c.SNP.validate()
	case TDX:
		_, err := c.TDX.QuoteSocket()
		return err
	}
	return nil
}

func checkCBit(prefix string, cbit, reduced uint32) []error {
	// The C-bit lies within the physical address width (at most 52 bits on
	// x86-64) and above the 4 KiB page offset.
	var errs []error
	if cbit < 32 || cbit > 63 {
		errs = append(errs, fieldErr(prefix+".cbitpos", "%d is out of range; allowed 32-63 (the host's CPUID 0x8000001F EBX[5:0], 47 or 51 on current parts)", cbit))
	}
	if reduced < 1 || reduced > 63 {
		errs = append(errs, fieldErr(prefix+".reduced_phys_bits", "%d is out of range; allowed 1-63 (the host's CPUID 0x8000001F EBX[11:6], usually 1)", reduced))
	}
	return errs
}

func (o *SEVOptions) validate(k Kind) error {
	errs := checkCBit("tee.sev", o.CBitPos, o.ReducedPhysBits)
	es := o.Policy&SEVPolicyES != 0
	if k == SEVES && !es {
		errs = append(errs, fieldErr("tee.sev.policy", "%#x lacks bit 2 (0x4), which SEV-ES requires; e.g. %#x", o.Policy, o.Policy|SEVPolicyES))
	}
	if k == SEV && es {
		errs = append(errs, fieldErr("tee.sev.policy", "%#x sets bit 2 (0x4), which requests SEV-ES; use tee.kind \"sev-es\" or clear the bit", o.Policy))
	}
	return errors.Join(errs...)
}

// CheckKernelHashes refuses an SEV-family launch through firmware (QEMU's)
// whose kernel, initrd and command line the launch measurement would not
// cover: without kernel-hashes the firmware loads whatever the host passes
// it, under a report a verifier accepts. (Cloud Hypervisor boots SNP from an
// IGVM file, which decides what is measured.)
func (c Config) CheckKernelHashes() error {
	var prefix string
	var on bool
	switch {
	case (c.Kind == SEV || c.Kind == SEVES) && c.SEV != nil:
		prefix, on = "tee.sev", c.SEV.KernelHashes
	case c.Kind == SNP && c.SNP != nil:
		prefix, on = "tee.snp", c.SNP.KernelHashes
	default:
		return nil
	}
	if on {
		return nil
	}
	k := c.Kind
	return fieldErr(prefix+".kernel_hashes", "false with TEE %q: the launch measurement would cover the firmware only, and the host could boot "+
		"any kernel, initrd or command line unmeasured; set %s.kernel_hashes = true with the AmdSev OVMF build "+
		"(hypervisor.firmware = %q)", k, prefix, AmdSevFirmware)
}

func (o *SNPOptions) validate() error {
	errs := checkCBit("tee.snp", o.CBitPos, o.ReducedPhysBits)
	if o.Policy&SNPPolicyReserved == 0 {
		errs = append(errs, fieldErr("tee.snp.policy", "%#x lacks bit 17 (0x20000), which the SNP ABI reserves as 1; e.g. %#x", o.Policy, o.Policy|SNPPolicyReserved))
	}
	if o.IDBlock != "" {
		if b, err := base64.StdEncoding.DecodeString(o.IDBlock); err != nil || len(b) != snpIDBlockSize {
			errs = append(errs, fieldErr("tee.snp.id_block", "must be base64 of exactly %d bytes", snpIDBlockSize))
		}
		if o.IDAuth == "" {
			errs = append(errs, fieldErr("tee.snp.id_auth", "empty; an id_block needs its id_auth"))
		}
	}
	if o.IDAuth != "" {
		if o.IDBlock == "" {
			errs = append(errs, fieldErr("tee.snp.id_auth", "set without id_block"))
		}
		if b, err := base64.StdEncoding.DecodeString(o.IDAuth); err != nil || len(b) > snpIDAuthMax {
			errs = append(errs, fieldErr("tee.snp.id_auth", "must be base64 of at most %d bytes", snpIDAuthMax))
		}
	}
	if o.AuthorKeyEnabled && o.IDAuth == "" {
		errs = append(errs, fieldErr("tee.snp.author_key_enabled", "true needs tee.snp.id_auth (the author key lives there)"))
	}
	return errors.Join(errs...)
}

// SNP ID block sizes QEMU accepts.
const (
	snpIDBlockSize = 96
	snpIDAuthMax   = 4096
)

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
			return nil, fieldErr(qgsKey, "%q: want \"vsock:CID:PORT\"", s)
		}
		for _, p := range parts[1:] {
			if _, err := strconv.ParseUint(p, 10, 32); err != nil {
				return nil, fieldErr(qgsKey, "%q: %q is not a 32-bit number; want \"vsock:CID:PORT\"", s, p)
			}
		}
		return map[string]string{"type": "vsock", "cid": parts[1], "port": parts[2]}, nil
	case strings.HasPrefix(s, "/"):
		return map[string]string{"type": "unix", "path": s}, nil
	}
	return nil, fieldErr(qgsKey, "%q: want \"\", \"vsock:CID:PORT\" or an absolute unix socket path", s)
}

const qgsKey = "tee.tdx.quote_generation_socket"
