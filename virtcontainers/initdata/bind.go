package initdata

import (
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// Fit copies digest into a zeroed buffer of size bytes: cut at the end when
// longer, zero-padded at the end when shorter (kata-types adjust_digest; the
// attestation agent and trustee's verifiers fit the same way). size <= 0
// yields nil.
func Fit(digest []byte, size int) []byte {
	if size <= 0 {
		return nil
	}
	out := make([]byte, size)
	copy(out, digest)
	return out
}

// FieldName names the hardware field that binds init-data for kind, or ""
// when the TEE has none.
func FieldName(kind tee.Kind) string {
	switch kind {
	case tee.SNP:
		return "SNP HOST_DATA"
	case tee.TDX:
		return "TDX MRCONFIGID"
	}
	return ""
}

// Binding returns the launch data for kind (the digest fitted to the TEE's
// field, for hypervisor.Config.LaunchData) and a note for the user (shim log,
// vm-command output). With no field to bind into, launchData is nil and the
// note says so: the digest is then only checked by a verifier that compares
// the init-data sent with the evidence, never by the hardware.
func Binding(kind tee.Kind, id *InitData) (launchData []byte, note string) {
	if id == nil {
		return nil, ""
	}
	digest := id.Digest()
	size := kind.LaunchDataSize()
	if size == 0 {
		what := fmt.Sprintf("TEE %q has no launch-data field", kind)
		if !kind.Confidential() {
			what = "the runtime class runs no TEE"
		}
		return nil, fmt.Sprintf("init-data not bound into the launch: %s; only the verifier can check the init-data %s digest %s",
			what, id.Algorithm, hex.EncodeToString(digest))
	}
	launchData = Fit(digest, size)
	switch {
	case len(digest) > size:
		note = fmt.Sprintf("init-data %s digest (%d B) truncated to %s (%d B)", id.Algorithm, len(digest), FieldName(kind), size)
	case len(digest) < size:
		note = fmt.Sprintf("init-data %s digest (%d B) zero-padded to %s (%d B)", id.Algorithm, len(digest), FieldName(kind), size)
	default:
		note = fmt.Sprintf("init-data %s digest bound into %s", id.Algorithm, FieldName(kind))
	}
	return launchData, note
}

// VerifyAgainstReport checks, in the guest, that the init-data digest is the
// one the hardware recorded at launch (reportField is SNP HOST_DATA or TDX
// MRCONFIGID, see ReportField). Errors: errdefs.ErrNotImplemented when kind
// has no such field (the caller goes on; only the verifier can check),
// errdefs.ErrInvalidArgument for a field of the wrong size, and
// errdefs.ErrFailedPrecondition on a mismatch, which must stop the sandbox:
// the host changed the init-data after launch.
func VerifyAgainstReport(kind tee.Kind, digest, reportField []byte) error {
	size := kind.LaunchDataSize()
	if size == 0 {
		return fmt.Errorf("TEE %q has no launch-data field to compare init-data with: %w", kind, errdefs.ErrNotImplemented)
	}
	if len(reportField) != size {
		return fmt.Errorf("%s from the TEE report is %d bytes, want %d: %w", FieldName(kind), len(reportField), size, errdefs.ErrInvalidArgument)
	}
	want := Fit(digest, size)
	if subtle.ConstantTimeCompare(want, reportField) != 1 {
		return fmt.Errorf("init-data digest does not match %s: the TEE report has %s, the init-data gives %s: %w",
			FieldName(kind), hex.EncodeToString(reportField), hex.EncodeToString(want), errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Offsets of the binding fields in the evidence the guest can obtain.
const (
	// AMD SEV-SNP ABI, ATTESTATION_REPORT: HOST_DATA at 0xC0, 32 bytes; the
	// signed part of the report is 0x2A0 bytes.
	snpHostDataOffset = 0xC0
	snpReportMinLen   = 0x2A0
	// Intel TDX TDREPORT_STRUCT (1024 B, /dev/tdx_guest): REPORTMACSTRUCT
	// (256) + TEE_TCB_INFO (256), then TDINFO: ATTRIBUTES, XFAM, MRTD,
	// MRCONFIGID.
	tdReportLen           = 1024
	tdReportMRConfigIDOff = 512 + 8 + 8 + 48
	// Intel TDX DCAP quote: 48-byte header; the TD report body starts with
	// TEE_TCB_SVN(16) MRSEAM(48) MRSIGNERSEAM(48) SEAMATTRIBUTES(8)
	// TDATTRIBUTES(8) XFAM(8) MRTD(48), then MRCONFIGID. Version 5 puts a
	// 6-byte body descriptor (type u16, size u32) after the header.
	quoteHeaderLen       = 48
	quoteBodyMRConfigOff = 16 + 48 + 48 + 8 + 8 + 8 + 48
)

// ReportField extracts the init-data binding field from TEE evidence: an SNP
// ATTESTATION_REPORT (as configfs-tsm's outblob or /dev/sev-guest return it,
// without the response header), a TDX TDREPORT (1024 bytes), or a TDX quote
// (version 4 or 5, configfs-tsm's outblob on TDX).
func ReportField(kind tee.Kind, evidence []byte) ([]byte, error) {
	switch kind {
	case tee.SNP:
		if len(evidence) < snpReportMinLen {
			return nil, fmt.Errorf("SNP attestation report is %d bytes, want at least %d: %w", len(evidence), snpReportMinLen, errdefs.ErrInvalidArgument)
		}
		return clone(evidence[snpHostDataOffset : snpHostDataOffset+32]), nil
	case tee.TDX:
		if len(evidence) == tdReportLen {
			return clone(evidence[tdReportMRConfigIDOff : tdReportMRConfigIDOff+48]), nil
		}
		if len(evidence) < quoteHeaderLen {
			return nil, fmt.Errorf("TDX evidence is %d bytes: neither a TDREPORT nor a quote: %w", len(evidence), errdefs.ErrInvalidArgument)
		}
		off := quoteHeaderLen + quoteBodyMRConfigOff
		switch v := binary.LittleEndian.Uint16(evidence); v {
		case 4:
		case 5:
			off += 6
		default:
			return nil, fmt.Errorf("TDX quote version %d is not supported (want 4 or 5): %w", v, errdefs.ErrInvalidArgument)
		}
		if len(evidence) < off+48 {
			return nil, fmt.Errorf("TDX quote is %d bytes, too short for MRCONFIGID: %w", len(evidence), errdefs.ErrInvalidArgument)
		}
		return clone(evidence[off : off+48]), nil
	}
	return nil, fmt.Errorf("TEE %q has no init-data binding field: %w", kind, errdefs.ErrNotImplemented)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
