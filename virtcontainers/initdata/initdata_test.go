package initdata

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

const aaTOML = "[token_configs]\n[token_configs.kbs]\nurl = \"http://kbs:8080\"\n"

func doc(alg string) []byte {
	return []byte(`version = "0.1.0"
algorithm = "` + alg + `"
[data]
"aa.toml" = '''
` + aaTOML + `'''
"cdh.toml" = '''
[kbc]
name = "cc_kbc"
url = "http://kbs:8080"
'''
"policy.rego" = '''
package agent_policy
default CreateContainerRequest := true
'''
`)
}

func mustParse(t *testing.T, raw []byte) *InitData {
	t.Helper()
	id, err := Parse(raw)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return id
}

func TestParseAndDigest(t *testing.T) {
	for _, alg := range Algorithms() {
		t.Run(string(alg), func(t *testing.T) {
			raw := doc(string(alg))
			id := mustParse(t, raw)
			var want []byte
			switch alg {
			case SHA256:
				s := sha256.Sum256(raw)
				want = s[:]
			case SHA384:
				s := sha512.Sum384(raw)
				want = s[:]
			case SHA512:
				s := sha512.Sum512(raw)
				want = s[:]
			}
			if got := id.Digest(); !bytes.Equal(got, want) {
				t.Fatalf("digest %x, want %x", got, want)
			}
			if id.Algorithm.Size() != len(want) {
				t.Fatalf("Size() = %d, want %d", id.Algorithm.Size(), len(want))
			}
			if v, _ := id.Get(KeyAA); v != aaTOML {
				t.Fatalf("aa.toml = %q", v)
			}
			if id.Version != Version {
				t.Fatalf("version %q", id.Version)
			}
		})
	}
}

// The digest covers the bytes as delivered: a semantically equal document
// that differs only in layout must give a different digest.
func TestDigestIsOverRawBytes(t *testing.T) {
	a := mustParse(t, doc("sha256"))
	b := mustParse(t, append([]byte("# comment\n"), doc("sha256")...))
	if bytes.Equal(a.Digest(), b.Digest()) {
		t.Fatal("digests equal for different raw bytes")
	}
	if a.Data[KeyAA] != b.Data[KeyAA] {
		t.Fatal("data differ")
	}
}

func TestParseEmptyDataTable(t *testing.T) {
	id := mustParse(t, []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n"))
	if len(id.Data) != 0 {
		t.Fatalf("data %v", id.Data)
	}
}

func TestParseRejects(t *testing.T) {
	big := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nx = '''" + strings.Repeat("a", MaxSize) + "'''\n"
	var many strings.Builder
	many.WriteString("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n")
	for i := 0; i <= MaxEntries; i++ {
		many.WriteString("k" + strings.Repeat("x", i) + " = \"v\"\n")
	}
	cases := []struct {
		name, doc, want string
	}{
		{"empty", "", "document is empty"},
		{"too large", big, "over the 262144-byte limit"},
		{"not utf8", "version = \"\xff\"", "not valid UTF-8"},
		{"bad toml", "version = ", "not valid TOML: line 1"},
		{"unknown key", "version = \"0.1.0\"\nalgorithim = \"sha256\"\n[data]\n", `unknown top-level key "algorithim"; allowed keys: version, algorithm, [data]`},
		{"missing version", "algorithm = \"sha256\"\n[data]\n", `version: missing; set version = "0.1.0"`},
		{"version not string", "version = 1\nalgorithm = \"sha256\"\n[data]\n", "version: must be a string, got an integer"},
		{"wrong version", "version = \"0.2.0\"\nalgorithm = \"sha256\"\n[data]\n", `version: "0.2.0" is not supported; allowed: "0.1.0"`},
		{"missing algorithm", "version = \"0.1.0\"\n[data]\n", `algorithm: missing; allowed: "sha256", "sha384", "sha512"`},
		{"algorithm not string", "version = \"0.1.0\"\nalgorithm = true\n[data]\n", "algorithm: must be a string, got a boolean"},
		{"iana algorithm name", "version = \"0.1.0\"\nalgorithm = \"sha-384\"\n[data]\n", `algorithm: "sha-384" is not supported; allowed: "sha256", "sha384", "sha512"`},
		{"missing data", "version = \"0.1.0\"\nalgorithm = \"sha256\"\n", "data: missing; add a [data] table"},
		{"data not table", "version = \"0.1.0\"\nalgorithm = \"sha256\"\ndata = \"x\"\n", "data: must be a table of strings, got a string"},
		{"data value not string", "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = 3\n", `data."aa.toml": must be a string, got an integer`},
		{"data value table", "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data.sub]\nx = \"y\"\n", `data."sub": must be a string, got a table`},
		{"too many entries", many.String(), "entries, over the limit of 64"},
		{"empty key", "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"\" = \"v\"\n", "data: key \"\" must be 1 to 255 bytes long"},
	}
	seen := map[string]string{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("error class: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
			if other, dup := seen[err.Error()]; dup {
				t.Fatalf("same message as case %q: %v", other, err)
			}
			seen[err.Error()] = c.name
		})
	}
}

func TestFit(t *testing.T) {
	d := []byte{1, 2, 3, 4}
	if got := Fit(d, 6); !bytes.Equal(got, []byte{1, 2, 3, 4, 0, 0}) {
		t.Fatalf("pad: %x", got)
	}
	if got := Fit(d, 2); !bytes.Equal(got, []byte{1, 2}) {
		t.Fatalf("truncate: %x", got)
	}
	if got := Fit(d, 0); got != nil {
		t.Fatalf("zero size: %x", got)
	}
	got := Fit(d, 4)
	got[0] = 9
	if d[0] != 1 {
		t.Fatal("Fit aliases its input")
	}
}

// Every algorithm × every TEE kind: the launch data is the digest fitted to
// the field (padding and truncation both happen), or nil with a note.
func TestBindingMatrix(t *testing.T) {
	kinds := []tee.Kind{tee.None, tee.SEV, tee.SEVES, tee.SNP, tee.TDX, tee.SE, tee.PEF}
	for _, alg := range Algorithms() {
		id := mustParse(t, doc(string(alg)))
		digest := id.Digest()
		for _, k := range kinds {
			t.Run(string(alg)+"/"+string(k), func(t *testing.T) {
				ld, note := Binding(k, id)
				size := k.LaunchDataSize()
				if size == 0 {
					if ld != nil {
						t.Fatalf("launch data %x for a TEE without a field", ld)
					}
					if !strings.Contains(note, "not bound") || !strings.Contains(note, "only the verifier") {
						t.Fatalf("note %q", note)
					}
					return
				}
				if len(ld) != size {
					t.Fatalf("len %d, want %d", len(ld), size)
				}
				n := min(size, len(digest))
				if !bytes.Equal(ld[:n], digest[:n]) {
					t.Fatalf("prefix differs: %x vs %x", ld, digest)
				}
				if !bytes.Equal(ld[n:], make([]byte, size-n)) {
					t.Fatalf("padding not zero: %x", ld)
				}
				switch {
				case len(digest) > size:
					if !strings.Contains(note, "truncated") {
						t.Fatalf("note %q", note)
					}
				case len(digest) < size:
					if !strings.Contains(note, "zero-padded") {
						t.Fatalf("note %q", note)
					}
				}
				if err := VerifyAgainstReport(k, digest, ld); err != nil {
					t.Fatalf("verify own binding: %v", err)
				}
			})
		}
	}
	if ld, note := Binding(tee.SNP, nil); ld != nil || note != "" {
		t.Fatal("nil init-data must bind nothing")
	}
}

func TestVerifyAgainstReport(t *testing.T) {
	id := mustParse(t, doc("sha384"))
	good := Fit(id.Digest(), 32)
	bad := append([]byte(nil), good...)
	bad[31] ^= 1
	if err := VerifyAgainstReport(tee.SNP, id.Digest(), bad); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "does not match SNP HOST_DATA") {
		t.Fatalf("mismatch: %v", err)
	}
	if err := VerifyAgainstReport(tee.SNP, id.Digest(), good[:31]); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("short field: %v", err)
	}
	if err := VerifyAgainstReport(tee.SEVES, id.Digest(), good); !errdefs.IsNotImplemented(err) {
		t.Fatalf("SEV-ES: %v", err)
	}
}

func TestReportField(t *testing.T) {
	hostData := bytes.Repeat([]byte{0xab}, 32)
	report := make([]byte, 0x4A0)
	copy(report[0xC0:], hostData)
	got, err := ReportField(tee.SNP, report)
	if err != nil || !bytes.Equal(got, hostData) {
		t.Fatalf("SNP: %x %v", got, err)
	}
	if _, err := ReportField(tee.SNP, report[:0x100]); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("short SNP report: %v", err)
	}

	cfg := bytes.Repeat([]byte{0xcd}, 48)
	tdreport := make([]byte, 1024)
	copy(tdreport[576:], cfg)
	if got, err := ReportField(tee.TDX, tdreport); err != nil || !bytes.Equal(got, cfg) {
		t.Fatalf("TDREPORT: %x %v", got, err)
	}
	q4 := make([]byte, 48+584+4)
	q4[0] = 4
	copy(q4[48+184:], cfg)
	if got, err := ReportField(tee.TDX, q4); err != nil || !bytes.Equal(got, cfg) {
		t.Fatalf("quote v4: %x %v", got, err)
	}
	q5 := make([]byte, 48+6+584+4)
	q5[0] = 5
	copy(q5[48+6+184:], cfg)
	if got, err := ReportField(tee.TDX, q5); err != nil || !bytes.Equal(got, cfg) {
		t.Fatalf("quote v5: %x %v", got, err)
	}
	q5[0] = 3
	if _, err := ReportField(tee.TDX, q5); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("quote v3: %v", err)
	}
	if _, err := ReportField(tee.SE, q5); !errdefs.IsNotImplemented(err) {
		t.Fatalf("SE: %v", err)
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	raw := doc("sha512")
	ann := Encode(raw)
	id, err := Decode(ann)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(id.Raw(), raw) {
		t.Fatal("raw differs after round trip")
	}
	if Encode(raw) != ann {
		t.Fatal("Encode is not deterministic")
	}
}

func gz(b []byte, multi bool) string {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	if multi {
		zw = gzip.NewWriter(&buf)
		zw.Write([]byte("# more\n"))
		zw.Close()
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func TestDecodeRejects(t *testing.T) {
	bomb := gz(make([]byte, MaxSize+1), false)
	if len(bomb) > 2048 {
		t.Fatalf("bomb fixture not small: %d", len(bomb))
	}
	cases := []struct{ name, ann, want string }{
		{"empty", "  ", "is empty"},
		{"not base64", "not*base64", "not standard base64"},
		{"url base64", strings.NewReplacer("+", "-", "/", "_").Replace(Encode(doc("sha384"))) + "-_", "not standard base64"},
		{"not gzip", base64.StdEncoding.EncodeToString(doc("sha256")), "not a gzip stream"},
		{"bomb", bomb, "exceeds the 262144-byte limit"},
		{"truncated gzip", Encode(doc("sha256"))[:40], "gzip stream is corrupt"},
		{"too long", strings.Repeat("A", maxAnnotationLen+4), "over the"},
		{"bad toml inside", gz([]byte("version=0.1.0"), false), "not valid TOML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.ann)
			if err == nil || !strings.Contains(err.Error(), c.want) || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
	// A second gzip member is ignored, not appended: the document is the
	// first member only, and that one is valid.
	id, err := Decode(gz(doc("sha256"), true))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(id.Raw(), []byte("# more")) {
		t.Fatal("second gzip member was read")
	}
}

func TestReadFileForms(t *testing.T) {
	dir := t.TempDir()
	raw := doc("sha384")
	ann := Encode(raw)
	gzb, _ := base64.StdEncoding.DecodeString(ann)
	forms := map[string][]byte{"raw.toml": raw, "ann.b64": []byte(ann + "\n"), "doc.gz": gzb}
	for name, b := range forms {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		id, err := ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(id.Raw(), raw) {
			t.Fatalf("%s: raw differs", name)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("absent: %v", err)
	}
}

func TestParseCopiesInput(t *testing.T) {
	raw := doc("sha256")
	id := mustParse(t, raw)
	want := id.Digest()
	raw[len(raw)-2] = 'X'
	if !bytes.Equal(id.Digest(), want) {
		t.Fatal("digest follows the caller's buffer")
	}
}

// `base64` wraps at 76 columns unless told -w0; the wrapped form is the
// same annotation.
func TestDecodeWrappedBase64(t *testing.T) {
	ann := Encode(doc("sha384"))
	var wrapped strings.Builder
	for i := 0; i < len(ann); i += 76 {
		wrapped.WriteString(ann[i:min(i+76, len(ann))] + "\n")
	}
	id, err := Decode(wrapped.String())
	if err != nil || !bytes.Equal(id.Raw(), doc("sha384")) {
		t.Fatalf("wrapped: %v", err)
	}
}
