package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"

	"github.com/coco-runtime/coco/guest-assets/agent/attest/jcs"
)

// Attester produces TEE evidence binding reportData (the runtime-data
// digest, at most 64 bytes) for the KBS. Tee is the KBS protocol's tee name
// ("sample", "snp", "tdx").
type Attester interface {
	Tee() string
	Evidence(reportData []byte) (json.RawMessage, error)
}

// ReportFunc fetches a hardware report for 64 bytes of report data and names
// its configfs-tsm provider ("sev_guest", "tdx_guest"); trust.Report is the
// real one.
type ReportFunc func(reportData []byte) (blob []byte, provider string, err error)

// HashAlgorithm hashes the runtime data. The KBS may select one in its
// challenge ("selected-hash-algorithm"); otherwise it is sha384, which is
// also what Trustee's built-in attestation service uses for sample, SNP and
// TDX (kbs coco/builtin.rs; only IBM SE differs).
type HashAlgorithm string

const (
	SHA256 HashAlgorithm = "sha256"
	SHA384 HashAlgorithm = "sha384"
	SHA512 HashAlgorithm = "sha512"
)

func (a HashAlgorithm) hash() (hash.Hash, error) {
	switch a {
	case SHA256:
		return sha256.New(), nil
	case SHA384:
		return sha512.New384(), nil
	case SHA512:
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("hash algorithm %q is not supported (sha256, sha384, sha512)", a)
}

// RuntimeData returns what the guest binds into its report: the RFC 8785
// canonical JSON of {"additional-evidence", "nonce", "tee-pubkey"} and its
// digest. The KBS rebuilds the same object from the attest request and
// compares digests (guest-components kbs_protocol rcar_client.rs
// get_composite_evidence; trustee's attestation service). additional is ""
// when there is no device evidence.
func RuntimeData(alg HashAlgorithm, nonce string, teePubKey any, additional string) (canonical, digest []byte, err error) {
	h, err := alg.hash()
	if err != nil {
		return nil, nil, err
	}
	canonical, err = jcs.Marshal(map[string]any{
		"additional-evidence": additional,
		"nonce":               nonce,
		"tee-pubkey":          teePubKey,
	})
	if err != nil {
		return nil, nil, err
	}
	h.Write(canonical)
	return canonical, h.Sum(nil), nil
}

// Sample is the KBS "sample" TEE: no hardware, evidence the verifier only
// checks for the report data. Only a non-TEE development guest may use it;
// choosing it is the caller's decision (the default Trustee resource policy
// refuses sample evidence anyway).
type Sample struct{}

func (Sample) Tee() string { return "sample" }

// Evidence is {"svn":"1","report_data":"<base64 std of reportData>"}
// (guest-components attester/src/sample/mod.rs). Trustee's sample verifier
// compares the decoded bytes exactly, without padding, so reportData goes in
// as given (48 bytes for sha384).
func (Sample) Evidence(reportData []byte) (json.RawMessage, error) {
	return json.Marshal(struct {
		SVN        string `json:"svn"`
		ReportData string `json:"report_data"`
	}{"1", base64.StdEncoding.EncodeToString(reportData)})
}

// pad64 fits report data into the hardware's 64-byte REPORT_DATA field,
// zero-filled at the end. The SNP and TDX verifiers do the same to the
// digest they recompute (trustee deps/verifier/src/lib.rs regularize_data(..,
// 64, ..): shorter data is padded with zeros, longer is cut), so a 48-byte
// sha384 digest matches as long as it is padded at the end.
func pad64(reportData []byte) ([]byte, error) {
	if len(reportData) > 64 {
		return nil, fmt.Errorf("report data is %d bytes, at most 64", len(reportData))
	}
	out := make([]byte, 64)
	copy(out, reportData)
	return out, nil
}

// SNP is AMD SEV-SNP evidence (see SNPEvidence for the shape).
type SNP struct {
	Report ReportFunc
}

func (*SNP) Tee() string { return "snp" }

func (a *SNP) Evidence(reportData []byte) (json.RawMessage, error) {
	data, err := pad64(reportData)
	if err != nil {
		return nil, err
	}
	blob, provider, err := a.Report(data)
	if err != nil {
		return nil, fmt.Errorf("SNP report: %w", err)
	}
	if provider != "sev_guest" {
		return nil, fmt.Errorf("SNP report: the report came from %q, not the SNP guest driver (sev_guest)", provider)
	}
	if len(blob) < snpReportSize || !bytes.Equal(blob[snpReportData:snpReportData+64], data) {
		return nil, fmt.Errorf("SNP report does not carry the report data asked for")
	}
	return SNPEvidence(blob)
}

// TDX is Intel TDX evidence: {"cc_eventlog": null, "quote": "<base64 std
// of the TD quote>"} (trustee deps/verifier/src/tdx/mod.rs TdxEvidence;
// guest-components attester/src/tdx/mod.rs). The quote comes from
// configfs-tsm with the report data zero-padded to 64 bytes. cc_eventlog is
// null: this guest keeps no CCEL/AA event log to replay, and the verifier
// then checks the quote alone.
type TDX struct {
	Report ReportFunc
}

func (*TDX) Tee() string { return "tdx" }

func (a *TDX) Evidence(reportData []byte) (json.RawMessage, error) {
	data, err := pad64(reportData)
	if err != nil {
		return nil, err
	}
	quote, provider, err := a.Report(data)
	if err != nil {
		return nil, fmt.Errorf("TDX quote: %w", err)
	}
	if provider != "tdx_guest" {
		return nil, fmt.Errorf("TDX quote: the report came from %q, not the TDX guest driver (tdx_guest)", provider)
	}
	if len(quote) == 0 {
		return nil, fmt.Errorf("TDX quote is empty (is a quote generation service attached to the VM?)")
	}
	return json.Marshal(struct {
		CCEventlog *string `json:"cc_eventlog"`
		Quote      string  `json:"quote"`
	}{nil, base64.StdEncoding.EncodeToString(quote)})
}
