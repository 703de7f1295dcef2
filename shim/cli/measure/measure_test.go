package measure

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// vectorDirs: the copies kept with the measure package, the project's
// shared folder when present, and $COCO_MEASURE_VECTORS.
func vectorDirs() map[string]string {
	const local = "../../../virtcontainers/measure/testdata/"
	dirs := map[string]string{"testdata": local + "sev-snp-measure", "extra": local + "extra"}
	for label, d := range map[string]string{"shared": "../../../../shared/testdata/sev-snp-measure", "env": os.Getenv("COCO_MEASURE_VECTORS")} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "vectors.tsv")); err == nil {
			dirs[label] = d
		}
	}
	return dirs
}

func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// rowFlags maps vectors.tsv columns to sev-snp-measure flags; path columns
// are relative to the vectors' folder.
type rowFlag struct {
	col, flag string
	path      bool
}

var rowFlags = []rowFlag{
	{"mode", "--mode", false}, {"ovmf", "--ovmf", true}, {"vcpus", "--vcpus", false},
	{"vcpu_type", "--vcpu-type", false}, {"vcpu_sig", "--vcpu-sig", false}, {"vmm_type", "--vmm-type", false},
	{"kernel", "--kernel", true}, {"initrd", "--initrd", true}, {"append", "--append", false},
	{"guest_features", "--guest-features", false},
}

// rowArgs turns a vectors.tsv row into flags: "-" means the flag is absent.
func rowArgs(dir string, row map[string]string) []string {
	var args []string
	for _, f := range rowFlags {
		v, ok := row[f.col]
		if !ok || v == "-" || (f.col == "append" && row["kernel"] == "-") {
			continue
		}
		if f.path {
			v = resolve(dir, v)
		}
		args = append(args, f.flag, v)
	}
	return args
}

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// Every row of every vectors.tsv, through Main as a user would run it.
func TestVectorsThroughMain(t *testing.T) {
	total := 0
	for label, dir := range vectorDirs() {
		rows, lines := tsvRows(t, filepath.Join(dir, "vectors.tsv"))
		for n, row := range rows {
			for c := range row {
				if c != "expected" && !slices.ContainsFunc(rowFlags, func(f rowFlag) bool { return f.col == c }) {
					t.Fatalf("%s: unknown column %q", label, c)
				}
			}
			total++
			args := rowArgs(dir, row)
			t.Run(fmt.Sprintf("%s:%d", label, lines[n]), func(t *testing.T) {
				code, out, errs := run(t, args...)
				if code != 0 {
					t.Fatalf("exit %d: %s (args %q)", code, errs, args)
				}
				if out != row["expected"]+"\n" {
					t.Fatalf("stdout %q, want %q (args %q)", out, row["expected"], args)
				}
			})
		}
	}
	if total < 38 {
		t.Fatalf("only %d vectors found", total)
	}
	t.Logf("%d vectors checked through Main", total)
}

const fixtures = "../../../virtcontainers/measure/testdata/sev-snp-measure/"

func TestOutputFormats(t *testing.T) {
	base := []string{"--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf", fixtures + "ovmf_AmdSev_suffix.bin",
		"--kernel", "/dev/null", "--initrd", "/dev/null", "--append", "console=ttyS0 loglevel=7", "--guest-features", "0x21"}
	const want = "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977"
	raw, _ := hex.DecodeString(want)
	code, out, _ := run(t, append(base, "--output-format", "base64")...)
	if code != 0 || out != base64.StdEncoding.EncodeToString(raw)+"\n" {
		t.Fatalf("base64: %d %q", code, out)
	}
	code, out, _ = run(t, append(base, "-v")...)
	if code != 0 || out != "Calculated SEV_SNP guest measurement: "+want+"\n" {
		t.Fatalf("verbose: %d %q", code, out)
	}
	// The same CPU given by signature and by family/model/stepping.
	for _, cpu := range [][]string{{"--vcpu-sig", "0x800f12"}, {"--vcpu-family", "23", "--vcpu-model", "1", "--vcpu-stepping", "2"}} {
		args := append([]string{}, base[:4]...)
		args = append(args, cpu...)
		args = append(args, base[6:]...)
		if code, out, errs := run(t, args...); code != 0 || out != want+"\n" {
			t.Fatalf("%v: %d %q %s", cpu, code, out, errs)
		}
	}
	// A precomputed OVMF hash gives the same digest.
	args := append(append([]string{}, base...), "--snp-ovmf-hash", "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74")
	if code, out, errs := run(t, args...); code != 0 || out != want+"\n" {
		t.Fatalf("ovmf hash: %d %q %s", code, out, errs)
	}
	// The OVMF hash is always hex: --snp-ovmf-hash takes hex.
	if code, out, _ := run(t, "--mode", "snp:ovmf-hash", "--ovmf", fixtures+"ovmf_AmdSev_suffix.bin", "--output-format", "base64", "-v"); code != 0 ||
		out != "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74\n" {
		t.Fatalf("ovmf-hash: %d %q", code, out)
	}
	// ec2 and gce need no vCPU signature.
	if code, out, errs := run(t, "--mode", "snp", "--vcpus", "1", "--vmm-type", "gce", "--ovmf", fixtures+"ovmf_AmdSev_suffix.bin",
		"--kernel", "/dev/null", "--initrd", "/dev/null", "--append", ""); code != 0 ||
		out != "5da7106cf14cf46b1725ebab123eb9e53bd46a1e9f400cd0c08e7827b04b688ea8b4e403c8404efed4397ea5d5d0722e\n" {
		t.Fatalf("gce: %d %q %s", code, out, errs)
	}
}

func TestUsageAndInputErrors(t *testing.T) {
	amd := fixtures + "ovmf_AmdSev_suffix.bin"
	x64 := fixtures + "ovmf_OvmfX64_suffix.bin"
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no mode", []string{"--ovmf", amd}, 2, "--mode is required"},
		{"no ovmf", []string{"--mode", "sev"}, 2, "--ovmf is required"},
		{"bad mode", []string{"--mode", "tdx", "--ovmf", amd}, 2, `mode "tdx" is not known`},
		{"initrd without kernel", []string{"--mode", "sev", "--ovmf", amd, "--initrd", "/dev/null"}, 2, "--initrd needs --kernel"},
		{"append without kernel", []string{"--mode", "sev", "--ovmf", amd, "--append", "x"}, 2, "--append needs --kernel"},
		{"no vcpus", []string{"--mode", "snp", "--ovmf", amd, "--vcpu-type", "EPYC"}, 2, "--vcpus N is required"},
		{"no cpu", []string{"--mode", "seves", "--vcpus", "1", "--ovmf", amd}, 2, "missing --vcpu-type, --vcpu-sig or --vcpu-family"},
		{"unknown cpu", []string{"--mode", "snp", "--vcpus", "1", "--vcpu-type", "Skylake", "--ovmf", amd}, 2, `vcpu type "Skylake" is not known`},
		{"partial family", []string{"--mode", "snp", "--vcpus", "1", "--vcpu-family", "25", "--ovmf", amd}, 2, "go together"},
		{"bad vmm", []string{"--mode", "snp", "--vcpus", "1", "--vmm-type", "xen", "--ovmf", amd}, 2, `vmm type "xen" is not known`},
		{"bad number", []string{"--mode", "snp", "--vcpus", "one", "--ovmf", amd}, 2, "invalid value"},
		{"bad format", []string{"--mode", "sev", "--ovmf", amd, "--output-format", "raw"}, 2, "want hex or base64"},
		{"initdata without config", []string{"--mode", "sev", "--ovmf", amd, "--initdata", "x"}, 2, "--initdata needs --config"},
		{"stray argument", []string{"--mode", "sev", "--ovmf", amd, "extra"}, 2, `unexpected argument "extra"`},
		{"missing ovmf file", []string{"--mode", "sev", "--ovmf", "/nonexistent/OVMF.fd"}, 1, "no such file"},
		{"kernel with plain OVMF", []string{"--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf", x64, "--kernel", "/dev/null"}, 1, "no SNP_KERNEL_HASHES section"},
		{"ovmf hash with sev", []string{"--mode", "sev", "--ovmf", amd, "--snp-ovmf-hash", "00"}, 1, "only works with mode snp"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := run(t, c.args...)
			if code != c.code || out != "" || !strings.Contains(errs, c.want) {
				t.Fatalf("exit %d (want %d), stdout %q, stderr %q (want %q)", code, c.code, out, errs, c.want)
			}
		})
	}
	if code, _, errs := run(t, "-h"); code != 0 || !strings.Contains(errs, "--snp-ovmf-hash") {
		t.Fatalf("help: %d %q", code, errs)
	}
}
