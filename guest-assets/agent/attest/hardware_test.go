//go:build linux

package attest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"
)

// These run only inside a confidential guest with the TEE's driver loaded;
// everywhere else (these CI machines have no TEE) they skip, saying so.

// TestSNPEvidenceOnHardware would check that a real SNP report, through
// configfs-tsm or /dev/sev-guest, becomes evidence whose report_data is the
// 64-byte padded digest and whose JSON has every member Trustee's SNP
// verifier reads.
func TestSNPEvidenceOnHardware(t *testing.T) {
	if _, err := os.Stat("/dev/sev-guest"); err != nil {
		t.Skip("no SEV-SNP guest here (/dev/sev-guest missing): would check a real SNP report's evidence and its report_data binding")
	}
	digest := bytes.Repeat([]byte{0xab}, 48)
	ev, err := NewSNP().Evidence(digest)
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Report struct {
			ReportData []int `json:"report_data"` // serde writes byte arrays as numbers
		} `json:"attestation_report"`
	}
	if err := json.Unmarshal(ev, &e); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(e.Report.ReportData))
	for i, v := range e.Report.ReportData {
		got[i] = byte(v)
	}
	if len(got) != 64 || !bytes.Equal(got[:48], digest) || !bytes.Equal(got[48:], make([]byte, 16)) {
		t.Fatalf("report_data %x", e.Report.ReportData)
	}
}

// TestTDXEvidenceOnHardware would check that a real TD quote comes back
// through configfs-tsm with the report data asked for.
func TestTDXEvidenceOnHardware(t *testing.T) {
	if _, err := os.Stat("/dev/tdx_guest"); err != nil {
		t.Skip("no TDX guest here (/dev/tdx_guest missing): would check a real TD quote's evidence and its report data")
	}
	ev, err := NewTDX().Evidence(bytes.Repeat([]byte{0xcd}, 48))
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Quote string }
	if err := json.Unmarshal(ev, &e); err != nil {
		t.Fatal(err)
	}
	q, err := base64.StdEncoding.DecodeString(e.Quote)
	if err != nil || !bytes.Contains(q, bytes.Repeat([]byte{0xcd}, 48)) {
		t.Fatalf("quote of %d bytes does not carry the report data (%v)", len(q), err)
	}
}
