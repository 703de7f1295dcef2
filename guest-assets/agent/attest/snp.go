package attest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
)

// SNP evidence is the JSON object Trustee's SNP verifier deserialises
// (trustee deps/verifier/src/snp/mod.rs `SnpEvidence`, the same struct as
// guest-components attestation-agent/attester/src/snp/mod.rs):
//
//	{"attestation_report": <sev::firmware::guest::AttestationReport>,
//	 "cert_chain": null | [{"cert_type":"VCEK","data":[...]}, ...]}
//
// attestation_report is serde's derived JSON of the virtee/sev crate's
// AttestationReport (sev 7.1.0, the version both trustee 78962cd and
// guest-components 8246e5e lock): one member per field in declaration order,
// byte arrays as JSON arrays of numbers, TcbVersion as {"fmc","bootloader",
// "tee","snp","microcode"}, Version as {"major","minor","build"}, the
// bitfield newtypes (policy, plat_info, key_info) as plain integers, and
// Option fields as null when the report version lacks them. The verifier
// re-encodes that struct into the 1184-byte firmware layout to check the
// signature, so every field must survive exactly; the layout here mirrors
// sev's Decoder (src/firmware/guest/types/snp.rs), which follows the SNP
// firmware ABI's ATTESTATION_REPORT table. Checked once by hand against
// trustee's attestation-service/tests/e2e/evidence.json (a real Genoa v3
// report): rebuilding the firmware bytes from that JSON with these offsets
// gives a report whose signature verifies with the VCEK in its cert_chain,
// and SNPEvidence of those bytes reproduces the JSON member for member.
//
// cert_chain is null: configfs-tsm's auxblob (the host's certificate table)
// is not read here, and the verifier then fetches the VCEK from AMD's KDS
// or its offline store by chip id and TCB.

// snpReportSize is ATTESTATION_REPORT's size (SNP ABI; sev ATT_REP_FW_LEN).
const snpReportSize = 1184

// SNP report offsets (SNP firmware ABI, Table "ATTESTATION_REPORT Structure").
const (
	snpReportData = 0x50
	snpCPUIDFam   = 0x188
	snpChipID     = 0x1A0
	snpSignature  = 0x2A0
)

// byteArray marshals as a JSON array of numbers, as serde writes [u8; N]
// (encoding/json would write base64).
type byteArray []byte

func (b byteArray) MarshalJSON() ([]byte, error) {
	var out bytes.Buffer
	out.WriteByte('[')
	for i, c := range b {
		if i > 0 {
			out.WriteByte(',')
		}
		out.WriteString(strconv.Itoa(int(c)))
	}
	out.WriteByte(']')
	return out.Bytes(), nil
}

type snpTCB struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

type snpVersion struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

type snpSig struct {
	R byteArray `json:"r"`
	S byteArray `json:"s"`
}

// snpReport has sev's AttestationReport fields in declaration order.
type snpReport struct {
	Version          uint32     `json:"version"`
	GuestSVN         uint32     `json:"guest_svn"`
	Policy           uint64     `json:"policy"`
	FamilyID         byteArray  `json:"family_id"`
	ImageID          byteArray  `json:"image_id"`
	VMPL             uint32     `json:"vmpl"`
	SigAlgo          uint32     `json:"sig_algo"`
	CurrentTCB       snpTCB     `json:"current_tcb"`
	PlatInfo         uint64     `json:"plat_info"`
	KeyInfo          uint32     `json:"key_info"`
	ReportData       byteArray  `json:"report_data"`
	Measurement      byteArray  `json:"measurement"`
	HostData         byteArray  `json:"host_data"`
	IDKeyDigest      byteArray  `json:"id_key_digest"`
	AuthorKeyDigest  byteArray  `json:"author_key_digest"`
	ReportID         byteArray  `json:"report_id"`
	ReportIDMA       byteArray  `json:"report_id_ma"`
	ReportedTCB      snpTCB     `json:"reported_tcb"`
	CPUIDFamID       *uint8     `json:"cpuid_fam_id"`
	CPUIDModID       *uint8     `json:"cpuid_mod_id"`
	CPUIDStep        *uint8     `json:"cpuid_step"`
	ChipID           byteArray  `json:"chip_id"`
	CommittedTCB     snpTCB     `json:"committed_tcb"`
	Current          snpVersion `json:"current"`
	Committed        snpVersion `json:"committed"`
	LaunchTCB        snpTCB     `json:"launch_tcb"`
	LaunchMitVector  *uint64    `json:"launch_mit_vector"`
	CurrentMitVector *uint64    `json:"current_mit_vector"`
	Signature        snpSig     `json:"signature"`
}

type snpEvidence struct {
	AttestationReport snpReport        `json:"attestation_report"`
	CertChain         *json.RawMessage `json:"cert_chain"`
}

// SNPEvidence converts a raw SNP ATTESTATION_REPORT (1184 bytes, as
// configfs-tsm's outblob or SNP_GET_REPORT return it) into Trustee's SNP
// evidence JSON.
func SNPEvidence(raw []byte) (json.RawMessage, error) {
	r, err := parseSNPReport(raw)
	if err != nil {
		return nil, err
	}
	return json.Marshal(snpEvidence{AttestationReport: *r})
}

func parseSNPReport(raw []byte) (*snpReport, error) {
	if len(raw) < snpReportSize {
		return nil, fmt.Errorf("SNP report is %d bytes, want %d", len(raw), snpReportSize)
	}
	raw = raw[:snpReportSize]
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(raw[off:]) }
	le64 := func(off int) uint64 { return binary.LittleEndian.Uint64(raw[off:]) }
	arr := func(off, n int) byteArray { return byteArray(bytes.Clone(raw[off : off+n])) }
	u8 := func(off int) *uint8 { v := raw[off]; return &v }

	version := le32(0)
	if version < 2 {
		return nil, fmt.Errorf("SNP report version %d is not supported (want 2 or later)", version)
	}
	turin, err := snpTurinLayout(raw, version)
	if err != nil {
		return nil, err
	}
	tcb := func(off int) snpTCB {
		b := raw[off : off+8]
		if turin {
			return snpTCB{FMC: u8(off), Bootloader: b[1], TEE: b[2], SNP: b[3], Microcode: b[7]}
		}
		return snpTCB{Bootloader: b[0], TEE: b[1], SNP: b[6], Microcode: b[7]}
	}
	ver := func(off int) snpVersion { return snpVersion{Build: raw[off], Minor: raw[off+1], Major: raw[off+2]} }

	r := &snpReport{
		Version: version, GuestSVN: le32(0x04), Policy: le64(0x08),
		FamilyID: arr(0x10, 16), ImageID: arr(0x20, 16),
		VMPL: le32(0x30), SigAlgo: le32(0x34), CurrentTCB: tcb(0x38),
		PlatInfo: le64(0x40), KeyInfo: le32(0x48),
		ReportData: arr(snpReportData, 64), Measurement: arr(0x90, 48), HostData: arr(0xC0, 32),
		IDKeyDigest: arr(0xE0, 48), AuthorKeyDigest: arr(0x110, 48),
		ReportID: arr(0x140, 32), ReportIDMA: arr(0x160, 32), ReportedTCB: tcb(0x180),
		ChipID: arr(snpChipID, 64), CommittedTCB: tcb(0x1E0),
		Current: ver(0x1E8), Committed: ver(0x1EC), LaunchTCB: tcb(0x1F0),
		Signature: snpSig{R: arr(snpSignature, 72), S: arr(snpSignature+72, 72)},
	}
	if version >= 3 { // CPUID fields arrived with report version 3
		r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep = u8(snpCPUIDFam), u8(snpCPUIDFam+1), u8(snpCPUIDFam+2)
	}
	if version >= 5 { // mitigation vectors with version 5
		l, c := le64(0x1F8), le64(0x200)
		r.LaunchMitVector, r.CurrentMitVector = &l, &c
	}
	return r, nil
}

// snpTurinLayout says whether the TCB fields use Turin's layout (FMC first).
// As sev does: version 2 reports carry no CPUID, so a chip id whose last 56
// bytes are zero means Turin (a masked, all-zero chip id cannot be told);
// later versions name the family and model.
func snpTurinLayout(raw []byte, version uint32) (bool, error) {
	if version == 2 {
		chip := raw[snpChipID : snpChipID+64]
		if bytes.Equal(chip, make([]byte, 64)) {
			return false, fmt.Errorf("SNP report version 2 with a masked chip id: the processor generation cannot be told")
		}
		return bytes.Equal(chip[8:], make([]byte, 56)), nil
	}
	fam, model := raw[snpCPUIDFam], raw[snpCPUIDFam+1]
	switch {
	case fam == 0x19 && (model <= 0x0F || model >= 0x10 && model <= 0x1F || model >= 0xA0 && model <= 0xAF):
		return false, nil // Milan, Genoa
	case fam == 0x1A && model <= 0x11:
		return true, nil // Turin
	}
	return false, fmt.Errorf("SNP report names CPU family %#x model %#x, which the SNP verifier does not know", fam, model)
}
