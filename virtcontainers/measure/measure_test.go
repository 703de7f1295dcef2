package measure

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// vector is one row of a vectors.tsv file (see testdata/*/README.md): its
// columns by header name. "-" means the flag is absent.
type vector struct {
	where, dir string
	col        map[string]string
}

func (v vector) get(name string) string {
	if s, ok := v.col[name]; ok {
		return s
	}
	return "-"
}

// knownColumns are the columns vectors.tsv files may have; an unknown one
// fails the test rather than being ignored.
var knownColumns = map[string]bool{"mode": true, "vcpus": true, "vcpu_type": true, "vcpu_sig": true, "ovmf": true,
	"kernel": true, "initrd": true, "append": true, "guest_features": true, "vmm_type": true, "expected": true}

// vectorDirs are the folders whose vectors.tsv the tests run: the copies in
// testdata, the project's shared folder when present, and
// $COCO_MEASURE_VECTORS.
func vectorDirs(t *testing.T) map[string]string {
	dirs := map[string]string{"testdata": "testdata/sev-snp-measure", "extra": "testdata/extra"}
	for label, d := range map[string]string{"shared": "../../../shared/testdata/sev-snp-measure", "env": os.Getenv("COCO_MEASURE_VECTORS")} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "vectors.tsv")); err == nil {
			dirs[label] = d
		}
	}
	return dirs
}

func readVectors(t *testing.T, label, dir string) []vector {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "vectors.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []vector
	var header []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		cols := strings.Split(line, "\t")
		if header == nil {
			for _, c := range cols {
				if !knownColumns[c] {
					t.Fatalf("%s: unknown column %q", dir, c)
				}
			}
			header = cols
			continue
		}
		if len(cols) != len(header) {
			t.Fatalf("%s:%d: %d columns, want %d", dir, n, len(cols), len(header))
		}
		v := vector{where: fmt.Sprintf("%s:%d", label, n), dir: dir, col: map[string]string{}}
		for i, c := range cols {
			v.col[header[i]] = c
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no vectors", dir)
	}
	return out
}

func resolve(dir, p string) string {
	if p == "-" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func loadOVMF(t *testing.T, path string) *OVMF {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseOVMF(b)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func vectorParams(t *testing.T, v vector) Params {
	t.Helper()
	mode, err := ParseMode(v.get("mode"))
	if err != nil {
		t.Fatal(err)
	}
	p := Params{Mode: mode, Firmware: loadOVMF(t, resolve(v.dir, v.get("ovmf"))), GuestFeatures: GuestFeaturesDefault}
	if s := v.get("vcpus"); s != "-" {
		if p.VCPUs, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	if s := v.get("vcpu_type"); s != "-" {
		if p.VCPUSig, err = CPUTypeSig(s); err != nil {
			t.Fatal(err)
		}
	}
	if s := v.get("vcpu_sig"); s != "-" {
		sig, err := strconv.ParseUint(s, 0, 32)
		if err != nil {
			t.Fatal(err)
		}
		p.VCPUSig = uint32(sig)
	}
	if s := v.get("vmm_type"); s != "-" {
		if p.VMM, err = ParseVMMType(s); err != nil {
			t.Fatal(err)
		}
	}
	if s := v.get("guest_features"); s != "-" {
		if p.GuestFeatures, err = strconv.ParseUint(s, 0, 64); err != nil {
			t.Fatal(err)
		}
	}
	if k := v.get("kernel"); k != "-" {
		initrd, cmdline := resolve(v.dir, v.get("initrd")), v.get("append")
		if initrd == "-" {
			initrd = ""
		}
		if cmdline == "-" {
			cmdline = ""
		}
		if p.Kernel, err = HashKernelFiles(resolve(v.dir, k), initrd, cmdline); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestVectors(t *testing.T) {
	total := 0
	for label, dir := range vectorDirs(t) {
		for _, v := range readVectors(t, label, dir) {
			total++
			t.Run(v.where, func(t *testing.T) {
				var got []byte
				if v.get("mode") == "snp:ovmf-hash" {
					got = OVMFHash(loadOVMF(t, resolve(v.dir, v.get("ovmf"))))
				} else {
					var err error
					if got, err = LaunchDigest(vectorParams(t, v)); err != nil {
						t.Fatal(err)
					}
				}
				if hex.EncodeToString(got) != v.get("expected") {
					t.Fatalf("digest %x\nwant   %s", got, v.get("expected"))
				}
			})
		}
	}
	t.Logf("%d vectors checked", total)
}

const amdSev = "testdata/sev-snp-measure/ovmf_AmdSev_suffix.bin"
const ovmfX64 = "testdata/sev-snp-measure/ovmf_OvmfX64_suffix.bin"

// More launches, with expected digests from virtee/sev-snp-measure's own
// public test suite (same fixtures): VMM types, vCPU counts, feature sets,
// precomputed OVMF hashes, and boots without a kernel.
func TestReferenceSuite(t *testing.T) {
	epyc := CPUSig(23, 1, 2)
	empty := NewKernelHashes(nil, nil, "")
	console := NewKernelHashes(nil, nil, "console=ttyS0 loglevel=7")
	ovmfHash, _ := hex.DecodeString("086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74")
	cases := []struct {
		name string
		ovmf string
		p    Params
		want string
	}{
		{"snp ovmf-hash seed 0x21", amdSev, Params{Mode: ModeSNP, VCPUs: 1, VCPUSig: epyc, GuestFeatures: 0x21, Kernel: empty, OVMFHash: ovmfHash},
			"329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198"},
		{"snp ovmf-hash seed 0x1", amdSev, Params{Mode: ModeSNP, VCPUs: 1, VCPUSig: epyc, GuestFeatures: 0x1, Kernel: empty, OVMFHash: ovmfHash},
			"ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"},
		{"snp ovmf-hash seed full", amdSev, Params{Mode: ModeSNP, VCPUs: 1, VCPUSig: epyc, GuestFeatures: 0x21, Kernel: console, OVMFHash: ovmfHash},
			"803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"},
		{"snp ec2 0x21", amdSev, Params{Mode: ModeSNP, VCPUs: 1, VCPUSig: epyc, GuestFeatures: 0x21, Kernel: empty, VMM: VMMEC2},
			"0ce9ccc06bab55eebe8abc234f3df6514883977a68a591b71052498ab52b2f1aa415db338033946ef93aa8278c0d67fb"},
		{"snp ec2 0x1", amdSev, Params{Mode: ModeSNP, VCPUs: 1, VCPUSig: epyc, GuestFeatures: 0x1, Kernel: empty, VMM: VMMEC2},
			"0883bd0eeb716e65b7b977a321c278d1e51b33b5c655fab985443bbcc65c086b9c15e8a0bd8811050dec7e24964e5056"},
		{"snp gce", amdSev, Params{Mode: ModeSNP, VCPUs: 1, GuestFeatures: 0x1, Kernel: empty, VMM: VMMGCE},
			"5da7106cf14cf46b1725ebab123eb9e53bd46a1e9f400cd0c08e7827b04b688ea8b4e403c8404efed4397ea5d5d0722e"},
		{"snp gce 4 vcpus", amdSev, Params{Mode: ModeSNP, VCPUs: 4, GuestFeatures: 0x1, Kernel: empty, VMM: VMMGCE},
			"5c5debf100fc339f90276e761ee1f1658d08922c3b20e2a2e6c7a6c3370b2452a15a00eae11886a93d6fd1e7ab81e29d"},
		{"snp no kernel 0x21", amdSev, Params{Mode: ModeSNP, VCPUs: 1, VCPUSig: epyc, GuestFeatures: 0x21},
			"e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b"},
		{"snp no kernel 0x1", amdSev, Params{Mode: ModeSNP, VCPUs: 1, VCPUSig: epyc, GuestFeatures: 0x1},
			"19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d"},
		{"snp 4 vcpus 0x1", amdSev, Params{Mode: ModeSNP, VCPUs: 4, VCPUSig: epyc, GuestFeatures: 0x1, Kernel: empty},
			"5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5"},
		{"snp OvmfX64 0x21", ovmfX64, Params{Mode: ModeSNP, VCPUs: 1, VCPUSig: epyc, GuestFeatures: 0x21},
			"28797ae0afaba4005a81e629acebfb59e6687949d6be44007cd5506823b0dd66f146aaae26ff291eed7b493d8a64c385"},
		{"seves 4 vcpus", amdSev, Params{Mode: ModeSEVES, VCPUs: 4, VCPUSig: epyc, GuestFeatures: 0x21, Kernel: empty},
			"0dccbcaba8e90b261bd0d2e1863a2f9da714768b7b2a19363cd6ae35aa90de91"},
		{"sev with cmdline", amdSev, Params{Mode: ModeSEV, Kernel: console},
			"82a3ee5d537c3620628270c292ae30cb40c3c878666a7890ee7ef2a08fb535ff"},
		{"sev OvmfX64 no kernel", ovmfX64, Params{Mode: ModeSEV},
			"b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.Firmware = loadOVMF(t, c.ovmf)
			got, err := LaunchDigest(c.p)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != c.want {
				t.Fatalf("digest %x\nwant   %s", got, c.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	x64 := loadOVMF(t, ovmfX64)
	amd := loadOVMF(t, amdSev)
	empty := NewKernelHashes(nil, nil, "")
	cases := []struct {
		name string
		p    Params
		want string
	}{
		{"snp kernel without hashes section", Params{Mode: ModeSNP, VCPUs: 1, Firmware: x64, Kernel: empty}, "no SNP_KERNEL_HASHES section"},
		{"seves kernel without hashes table", Params{Mode: ModeSEVES, VCPUs: 1, Firmware: x64, Kernel: empty}, "does not support kernel/initrd/cmdline measurement"},
		{"sev kernel without hashes table", Params{Mode: ModeSEV, Firmware: x64, Kernel: empty}, "does not support kernel/initrd/cmdline measurement"},
		{"no vcpus", Params{Mode: ModeSNP, Firmware: amd}, "vcpus is 0"},
		{"ovmf hash with sev", Params{Mode: ModeSEV, Firmware: amd, OVMFHash: make([]byte, 48)}, "only works with mode snp"},
		{"short ovmf hash", Params{Mode: ModeSNP, VCPUs: 1, Firmware: amd, OVMFHash: make([]byte, 32)}, "OVMF hash is 32 bytes"},
		{"no firmware", Params{Mode: ModeSNP, VCPUs: 1}, "no OVMF firmware"},
		{"bad mode", Params{Mode: "tdx", Firmware: amd}, `mode "tdx" is not known`},
		{"bad vmm", Params{Mode: ModeSNP, VCPUs: 1, Firmware: amd, VMM: "xen"}, `vmm type "xen" is not known`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LaunchDigest(c.p)
			if err == nil || !strings.Contains(err.Error(), c.want) || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
	// A firmware without the SEV-ES reset block cannot start SEV-ES vCPUs.
	plain, err := ParseOVMF(make([]byte, 8192))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LaunchDigest(Params{Mode: ModeSEVES, VCPUs: 1, Firmware: plain}); err == nil || !strings.Contains(err.Error(), "no SEV-ES reset block") {
		t.Fatalf("got %v", err)
	}
	if _, err := LaunchDigest(Params{Mode: ModeSEV, Firmware: plain}); err != nil {
		t.Fatalf("plain SEV needs no metadata: %v", err)
	}
}

func TestParseOVMF(t *testing.T) {
	amd := loadOVMF(t, amdSev)
	if amd.GPA() != 1<<32-4096 {
		t.Fatalf("GPA %#x", amd.GPA())
	}
	if eip, ok := amd.ResetEIP(); !ok || eip == 0 {
		t.Fatalf("reset EIP %#x %v", eip, ok)
	}
	if _, ok := amd.HashesTableGPA(); !ok {
		t.Fatal("AmdSev build has no hashes table")
	}
	types := map[SectionType]bool{}
	for _, s := range amd.Sections() {
		types[s.Type] = true
	}
	for _, want := range []SectionType{SectionSNPSecMem, SectionSNPSecrets, SectionCPUID, SectionKernelHashes} {
		if !types[want] {
			t.Errorf("AmdSev build lacks %s; has %v", want, amd.Sections())
		}
	}
	if _, ok := loadOVMF(t, ovmfX64).HashesTableGPA(); ok {
		t.Fatal("OvmfX64 build reports a hashes table")
	}
	for _, n := range []int{0, 100} {
		if _, err := ParseOVMF(make([]byte, n)); !errdefs.IsInvalidArgument(err) {
			t.Fatalf("%d-byte image: %v", n, err)
		}
	}
	// A corrupt footer size must be an error, not a panic.
	b, _ := os.ReadFile(amdSev)
	b[len(b)-32-18] = 0xff
	b[len(b)-32-17] = 0xff
	if _, err := ParseOVMF(b); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("corrupt footer: %v", err)
	}
}

func TestCPUSig(t *testing.T) {
	cases := map[string]uint32{"EPYC-v4": 0x800f12, "EPYC-Rome": 0x830f10, "EPYC-Milan": 0xa00f11, "EPYC-Genoa": 0xa10f10, "EPYC-Turin": 0xb00f00}
	for name, want := range cases {
		got, err := CPUTypeSig(name)
		if err != nil || got != want {
			t.Errorf("%s: %#x %v, want %#x", name, got, err, want)
		}
	}
	if _, err := CPUTypeSig("Skylake"); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "EPYC-Milan") {
		t.Fatalf("unknown type: %v", err)
	}
}

func TestHashesTable(t *testing.T) {
	tab := NewKernelHashes([]byte("k"), nil, "").Table()
	if len(tab) != 176 {
		t.Fatalf("table is %d bytes, want 176 (168 padded to 16)", len(tab))
	}
	if got := guidString(tab[:16]); got != guidHashTableHeader {
		t.Fatalf("header GUID %s", got)
	}
	if tab[16] != 168 || tab[17] != 0 {
		t.Fatalf("length %d", tab[16])
	}
}

func BenchmarkSNPDigest(b *testing.B) {
	raw, err := os.ReadFile(amdSev)
	if err != nil {
		b.Fatal(err)
	}
	o, err := ParseOVMF(raw)
	if err != nil {
		b.Fatal(err)
	}
	p := Params{Mode: ModeSNP, VCPUs: 4, VCPUSig: CPUSig(25, 1, 1), Firmware: o, GuestFeatures: 1, Kernel: NewKernelHashes(nil, nil, "")}
	for b.Loop() {
		if _, err := LaunchDigest(p); err != nil {
			b.Fatal(err)
		}
	}
}
