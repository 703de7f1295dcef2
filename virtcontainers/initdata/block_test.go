package initdata

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestBlockImageRoundTrip(t *testing.T) {
	for _, alg := range Algorithms() {
		raw := doc(string(alg))
		img, err := BlockImage(raw)
		if err != nil {
			t.Fatal(err)
		}
		if len(img)%512 != 0 {
			t.Fatalf("image is %d bytes, not a multiple of 512", len(img))
		}
		if string(img[:8]) != "initdata" {
			t.Fatalf("magic %q", img[:8])
		}
		n := binary.LittleEndian.Uint64(img[8:16])
		if 16+int(n) > len(img) || 16+int(n)+512 <= len(img) {
			t.Fatalf("gzip length %d does not fit image of %d", n, len(img))
		}
		if !bytes.Equal(img[16+n:], make([]byte, len(img)-16-int(n))) {
			t.Fatal("padding is not zero")
		}
		got, err := ReadBlockImage(bytes.NewReader(img))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, raw) {
			t.Fatal("round trip changed the document")
		}
		// The guest must derive the same digest as the host.
		if !bytes.Equal(mustParse(t, got).Digest(), mustParse(t, raw).Digest()) {
			t.Fatal("digest differs after round trip")
		}
	}
}

func TestBlockImageRejectsInvalidDocument(t *testing.T) {
	if _, err := BlockImage([]byte("version = \"9\"\n")); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("got %v", err)
	}
}

func TestReadBlockImageErrors(t *testing.T) {
	img, err := BlockImage(doc("sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBlockImage(bytes.NewReader(make([]byte, 4096))); !errdefs.IsNotFound(err) {
		t.Fatalf("zero disk: %v", err)
	}
	if _, err := ReadBlockImage(bytes.NewReader([]byte("init"))); !errdefs.IsNotFound(err) {
		t.Fatalf("tiny disk: %v", err)
	}
	huge := append([]byte(nil), img...)
	binary.LittleEndian.PutUint64(huge[8:], 1<<40)
	if _, err := ReadBlockImage(bytes.NewReader(huge)); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("huge length: %v", err)
	}
	past := append([]byte(nil), img...)
	binary.LittleEndian.PutUint64(past[8:], uint64(len(img)))
	if _, err := ReadBlockImage(bytes.NewReader(past)); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "runs past the device") {
		t.Fatalf("length past end: %v", err)
	}
	corrupt := append([]byte(nil), img...)
	corrupt[16] ^= 0xff
	if _, err := ReadBlockImage(bytes.NewReader(corrupt)); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("corrupt gzip: %v", err)
	}
}

func TestScanAndWriteBlockImage(t *testing.T) {
	dir := t.TempDir()
	raw := doc("sha384")
	if err := os.WriteFile(filepath.Join(dir, "vda"), make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Scan([]string{filepath.Join(dir, "vd*")}); !errdefs.IsNotFound(err) {
		t.Fatalf("no image: %v", err)
	}
	img := filepath.Join(dir, "vdb")
	if err := WriteBlockImage(img, raw); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(img); err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("image mode: %v %v", fi.Mode(), err)
	}
	got, dev, err := Scan([]string{filepath.Join(dir, "vd*")})
	if err != nil || dev != img || !bytes.Equal(got, raw) {
		t.Fatalf("scan: dev=%s err=%v", dev, err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".initdata-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
	// A device with the magic but a broken body is an error, never skipped.
	bad, _ := os.ReadFile(img)
	n := binary.LittleEndian.Uint64(bad[8:16])
	bad[16+n-8] ^= 0xff // the gzip CRC-32
	if err := os.WriteFile(filepath.Join(dir, "vda"), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, dev, err := Scan([]string{filepath.Join(dir, "vd*")}); err == nil || !strings.HasSuffix(dev, "vda") {
		t.Fatalf("tampered image accepted: dev=%s err=%v", dev, err)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "initdata")
	raw := doc("sha256")
	id := mustParse(t, raw)
	policy, err := WriteFiles(dir, raw, id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(policy, "package agent_policy") {
		t.Fatalf("policy %q", policy)
	}
	for name, want := range map[string]string{"initdata.toml": string(raw), "aa.toml": id.Data[KeyAA], "cdh.toml": id.Data[KeyCDH]} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != want {
			t.Fatalf("%s: %q %v", name, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "policy.rego")); !os.IsNotExist(err) {
		t.Fatalf("policy.rego written to disk: %v", err)
	}
	// A later document without cdh.toml removes the stale file.
	raw2 := []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"aa.toml\" = \"x\"\n")
	policy, err = WriteFiles(dir, raw2, mustParse(t, raw2))
	if err != nil || policy != "" {
		t.Fatalf("second write: %q %v", policy, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cdh.toml")); !os.IsNotExist(err) {
		t.Fatalf("stale cdh.toml: %v", err)
	}
	if _, err := WriteFiles(dir, raw, mustParse(t, raw2)); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("mismatched raw accepted: %v", err)
	}
}

func TestReadTSMReport(t *testing.T) {
	if _, _, err := ReadTSMReport(filepath.Join(t.TempDir(), "absent"), nil); !errdefs.IsNotFound(err) {
		t.Fatalf("absent configfs-tsm: %v", err)
	}
	if _, err := VerifyInGuest(filepath.Join(t.TempDir(), "absent"), mustParse(t, doc("sha256"))); !errdefs.IsNotFound(err) {
		t.Fatalf("VerifyInGuest without TSM: %v", err)
	}
	if _, err := os.Stat(TSMReportDir); err != nil {
		t.Skipf("no configfs-tsm at %s (no TEE guest here): would fetch a real report and compare HOST_DATA/MRCONFIGID", TSMReportDir)
	}
	blob, provider, err := ReadTSMReport(TSMReportDir, []byte("coco"))
	if err != nil {
		t.Fatal(err)
	}
	kind, err := ProviderKind(provider)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReportField(kind, blob); err != nil {
		t.Fatal(err)
	}
}

func TestLoadInGuest(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "run", "initdata")
	noTSM := filepath.Join(dir, "no-tsm")
	opts := GuestOptions{Devices: []string{filepath.Join(dir, "vd*")}, Dir: out, TSMRoot: noTSM}

	res, err := LoadInGuest(opts)
	if err != nil || res.InitData != nil {
		t.Fatalf("no image: %+v %v", res, err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("files written without init-data")
	}

	raw := doc("sha512")
	if err := WriteBlockImage(filepath.Join(dir, "vdb"), raw); err != nil {
		t.Fatal(err)
	}
	res, err = LoadInGuest(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.InitData.Raw(), raw) || !strings.Contains(res.Policy, "agent_policy") || !strings.Contains(res.Note, "only the verifier") {
		t.Fatalf("result %+v", res)
	}
	if b, err := os.ReadFile(filepath.Join(out, "aa.toml")); err != nil || string(b) != aaTOML {
		t.Fatalf("aa.toml %q %v", b, err)
	}

	// An image the host rewrote with an invalid document is refused and
	// nothing new is published.
	os.RemoveAll(out)
	bad := compress([]byte("version = \"0.1.0\"\nalgorithm = \"md5\"\n[data]\n"))
	img := make([]byte, 512)
	copy(img, "initdata")
	binary.LittleEndian.PutUint64(img[8:], uint64(len(bad)))
	copy(img[16:], bad)
	os.Chmod(filepath.Join(dir, "vdb"), 0o644)
	if err := os.WriteFile(filepath.Join(dir, "vdb"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadInGuest(opts); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"md5"`) {
		t.Fatalf("invalid document: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("files written for a refused document")
	}
}

// The guest compares the digest with the TEE report and refuses a mismatch
// before publishing anything.
func TestLoadInGuestComparesReport(t *testing.T) {
	dir := t.TempDir()
	raw := doc("sha384")
	if err := WriteBlockImage(filepath.Join(dir, "vda"), raw); err != nil {
		t.Fatal(err)
	}
	digest := mustParse(t, raw).Digest()
	snpReport := func(hostData []byte) func([]byte) ([]byte, string, error) {
		return func([]byte) ([]byte, string, error) {
			r := make([]byte, 0x4A0)
			copy(r[0xC0:], hostData)
			return r, "sev_guest", nil
		}
	}
	out := filepath.Join(dir, "out")
	opts := GuestOptions{Devices: []string{filepath.Join(dir, "vd*")}, Dir: out, Report: snpReport(Fit(digest, 32))}
	res, err := LoadInGuest(opts)
	if err != nil || res.TEE != "snp" || res.Note != "" {
		t.Fatalf("matching report: %+v %v", res, err)
	}

	os.RemoveAll(out)
	opts.Report = snpReport(make([]byte, 32))
	if _, err := LoadInGuest(opts); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "does not match SNP HOST_DATA") {
		t.Fatalf("mismatching report: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("files published despite a mismatch")
	}

	opts.Report = func([]byte) ([]byte, string, error) { return nil, "arm_cca_guest", nil }
	if res, err := LoadInGuest(opts); err != nil || !strings.Contains(res.Note, "only the verifier") {
		t.Fatalf("unknown provider: %+v %v", res, err)
	}
}

// A TEE guest (Strict) takes nothing on the host's word: each way a hostile
// host could separate the init-data from what the hardware recorded at
// launch is refused, naming the field and both values.
func TestLoadInGuestStrictRefusesHostileHost(t *testing.T) {
	raw := doc("sha256")
	digest := mustParse(t, raw).Digest()
	snp := func(hostData []byte) func([]byte) ([]byte, string, error) {
		return func([]byte) ([]byte, string, error) {
			r := make([]byte, 0x4A0)
			copy(r[0xC0:], hostData)
			return r, "sev_guest", nil
		}
	}
	noReport := func([]byte) ([]byte, string, error) {
		return nil, "", fmt.Errorf("no configfs-tsm, no /dev/sev-guest: %w", errdefs.ErrNotFound)
	}
	other := bytes.Repeat([]byte{0xAB}, 32)
	for _, tc := range []struct {
		name     string
		attached bool
		report   func([]byte) ([]byte, string, error)
		want     []string // all in the error; none = accepted
	}{
		{name: "bound init-data", attached: true, report: snp(Fit(digest, 32))},
		{name: "no init-data, zero HOST_DATA", report: snp(make([]byte, 32))},
		{name: "init-data stripped while HOST_DATA is set", report: snp(Fit(digest, 32)),
			want: []string{"SNP HOST_DATA", hex.EncodeToString(digest), "no init-data disk is attached"}},
		{name: "host-made init-data, zero HOST_DATA", attached: true, report: snp(make([]byte, 32)),
			want: []string{"does not match SNP HOST_DATA", strings.Repeat("00", 32), hex.EncodeToString(digest)}},
		{name: "mismatched digest", attached: true, report: snp(other),
			want: []string{"does not match SNP HOST_DATA", hex.EncodeToString(other), hex.EncodeToString(digest)}},
		{name: "no report source", attached: true, report: noReport,
			want: []string{"cannot read its own attestation report", "refuses to run containers"}},
		{name: "no report source, no init-data", report: noReport,
			want: []string{"cannot read its own attestation report"}},
		{name: "unknown report provider", attached: true,
			report: func([]byte) ([]byte, string, error) { return make([]byte, 64), "fake_guest", nil },
			want:   []string{`"fake_guest"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.attached {
				if err := WriteBlockImage(filepath.Join(dir, "vda"), raw); err != nil {
					t.Fatal(err)
				}
			}
			out := filepath.Join(dir, "out")
			res, err := LoadInGuest(GuestOptions{Devices: []string{filepath.Join(dir, "vd*")}, Dir: out, Report: tc.report, Strict: true})
			if len(tc.want) == 0 {
				if err != nil || res.TEE != "snp" {
					t.Fatalf("refused: %+v %v", res, err)
				}
				return
			}
			if !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("err = %v, want a failed precondition", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatal("init-data published despite the refusal")
			}
		})
	}
}
