package measure

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
	"github.com/coco-runtime/coco/sandbox/vmplan"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

const initDataTOML = `version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs.kbs]
url = "http://kbs:8080"
'''
`

// classFiles writes guest assets, an init-data file and a runtime class
// file overlaying the defaults with tee (absolute asset paths, so share_dir
// does not matter).
func classFiles(t *testing.T, teeTable string) (cfgPath, idPath, kernel, initrd string) {
	t.Helper()
	dir := t.TempDir()
	kernel = filepath.Join(dir, "vmlinuz")
	initrd = filepath.Join(dir, "initrd.img")
	idPath = filepath.Join(dir, "initdata.toml")
	for p, b := range map[string]string{kernel: "kernel bytes", initrd: "initrd bytes", idPath: initDataTOML} {
		if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	firmware, err := filepath.Abs(fixtures + "ovmf_AmdSev_suffix.bin")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "configuration-qemu-test.toml")
	body := `[hypervisor]
kernel = "` + kernel + `"
initrd = "` + initrd + `"
firmware = "` + firmware + `"
cpu_model = "EPYC-v4"
vcpus = 2
kernel_params = "quiet"

` + teeTable
	if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, idPath, kernel, initrd
}

func runReport(t *testing.T, args ...string) *Report {
	t.Helper()
	code, out, errs := run(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rep Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	return &rep
}

// --config measures what the QEMU driver would really run: the digest must
// equal the one computed from explicit flags naming the same firmware,
// kernel, initrd, command line (the driver's, not just kernel_params), vCPUs
// and CPU.
func TestConfigSNPMatchesExplicitFlags(t *testing.T) {
	cfgPath, idPath, kernel, initrd := classFiles(t, "[tee]\nkind = \"snp\"\n")
	rep := runReport(t, "--config", cfgPath, "--initdata", idPath)

	if rep.TEE != "snp" || rep.Launch == nil || rep.Measurement == nil {
		t.Fatalf("report: %+v", rep)
	}
	l := rep.Launch
	if l.Kernel != kernel || l.Initrd != initrd || l.VCPUs != 2 || l.CPUModel != "EPYC-v4" || !l.KernelHashes {
		t.Fatalf("launch: %+v", l)
	}
	if !strings.Contains(l.Cmdline, "quiet") || l.Cmdline == "quiet" {
		t.Fatalf("cmdline %q: want the driver's full command line including kernel_params", l.Cmdline)
	}
	code, out, errs := run(t, "--mode", "snp", "--vcpus", "2", "--vcpu-type", "EPYC-v4", "--ovmf", l.Firmware,
		"--kernel", kernel, "--initrd", initrd, "--append", l.Cmdline)
	if code != 0 || out != rep.Measurement.Hex+"\n" {
		t.Fatalf("explicit flags give %q (%s), config gives %s", out, errs, rep.Measurement.Hex)
	}
	if got := rep.ReferenceValues["snp_launch_measurement"]; len(got) != 1 || got[0] != rep.Measurement.Base64 {
		t.Fatalf("reference value %v", got)
	}

	// Init-data: the digest fitted to HOST_DATA, as QEMU's host-data= gets it.
	id, err := initdata.ReadFile(idPath)
	if err != nil {
		t.Fatal(err)
	}
	want := base64.StdEncoding.EncodeToString(initdata.Fit(id.Digest(), 32))
	if rep.InitData == nil || rep.InitData.LaunchDataBase64 != want || rep.InitData.Field != "SNP HOST_DATA" {
		t.Fatalf("init-data %+v, want launch data %s", rep.InitData, want)
	}
	if got := rep.ReferenceValues["init_data"]; len(got) != 1 || got[0] != want {
		t.Fatalf("init_data reference %v", got)
	}

	// The RVPS message carries the same reference values.
	payload, err := base64.StdEncoding.DecodeString(rep.RVPS.Payload)
	if err != nil {
		t.Fatal(err)
	}
	var refs map[string][]string
	if err := json.Unmarshal(payload, &refs); err != nil || rep.RVPS.Type != "sample" || refs["init_data"][0] != want {
		t.Fatalf("rvps payload %s: %v", payload, err)
	}

	// The init-data binding is not part of the launch digest.
	if rep2 := runReport(t, "--config", cfgPath); rep2.Measurement.Hex != rep.Measurement.Hex || rep2.InitData != nil {
		t.Fatalf("digest changed with init-data, or init-data invented: %+v", rep2)
	}
	// Overrides: another CPU and guest features change the digest.
	if rep3 := runReport(t, "--config", cfgPath, "--vcpu-type", "EPYC-Milan", "--guest-features", "0x21"); rep3.Measurement.Hex == rep.Measurement.Hex || rep3.Launch.GuestFeatures != "0x21" {
		t.Fatalf("overrides ignored: %+v", rep3.Launch)
	}
}

func TestConfigSEVAndUnmeasuredKinds(t *testing.T) {
	cfgPath, idPath, kernel, initrd := classFiles(t, "[tee]\nkind = \"sev\"\n")
	rep := runReport(t, "--config", cfgPath, "--initdata", idPath)
	if rep.Launch == nil || rep.Launch.Mode != "sev" || rep.Measurement.Algorithm != "sha256" {
		t.Fatalf("sev report: %+v", rep)
	}
	code, out, _ := run(t, "--mode", "sev", "--ovmf", rep.Launch.Firmware, "--kernel", kernel, "--initrd", initrd, "--append", rep.Launch.Cmdline)
	if code != 0 || out != rep.Measurement.Hex+"\n" {
		t.Fatalf("explicit sev %q vs %s", out, rep.Measurement.Hex)
	}
	if rep.InitData == nil || rep.InitData.LaunchDataBase64 != "" || !strings.Contains(rep.InitData.Note, "only the verifier") {
		t.Fatalf("SEV init-data must be unbound with a note: %+v", rep.InitData)
	}

	cfgPath, idPath, _, _ = classFiles(t, "[tee]\nkind = \"sev-es\"\n[tee.sev]\npolicy = 0x5\n")
	if rep := runReport(t, "--config", cfgPath); rep.Launch == nil || rep.Launch.Mode != "seves" || rep.Launch.VCPUSig != "0x800f12" {
		t.Fatalf("sev-es report: %+v", rep.Launch)
	}

	cfgPath, idPath, _, _ = classFiles(t, "[tee]\nkind = \"tdx\"\n")
	rep = runReport(t, "--config", cfgPath, "--initdata", idPath)
	if rep.Measurement != nil || rep.NotComputed == nil || !slices.Contains(rep.NotComputed.Pin, "MRTD") ||
		rep.Launch == nil || rep.Launch.Kernel == "" || rep.Launch.Cmdline == "" {
		t.Fatalf("tdx: %+v", rep)
	}
	if rep.InitData == nil || rep.InitData.Field != "TDX MRCONFIGID" || len(rep.InitData.LaunchDataHex) != 96 {
		t.Fatalf("tdx init-data %+v", rep.InitData)
	}
}

func TestConfigErrors(t *testing.T) {
	cfgPath, _, _, _ := classFiles(t, "[tee]\nkind = \"snp\"\n")
	if code, _, errs := run(t, "--config", cfgPath, "--ovmf", "x"); code != 2 || !strings.Contains(errs, "--ovmf cannot be combined with --config") {
		t.Fatalf("conflict: %d %s", code, errs)
	}
	if code, _, errs := run(t, "--config", filepath.Join(t.TempDir(), "absent.toml")); code != 1 || !strings.Contains(errs, "absent.toml") {
		t.Fatalf("absent config: %d %s", code, errs)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("version = \"9\"\n"), 0o600)
	if code, _, errs := run(t, "--config", cfgPath, "--initdata", bad); code != 1 || !strings.Contains(errs, "version") {
		t.Fatalf("bad init-data: %d %s", code, errs)
	}
	hostCPU, _, _, _ := classFiles(t, "[tee]\nkind = \"snp\"\n")
	b, _ := os.ReadFile(hostCPU)
	os.WriteFile(hostCPU, bytes.Replace(b, []byte(`cpu_model = "EPYC-v4"`), []byte(`cpu_model = "host"`), 1), 0o600)
	if code, _, errs := run(t, "--config", hostCPU); code != 1 || !strings.Contains(errs, "pass --vcpu-type or --vcpu-sig") {
		t.Fatalf("host cpu: %d %s", code, errs)
	}
	if rep := runReport(t, "--config", hostCPU, "--vcpu-sig", "0xa00f11"); rep.Launch.VCPUSig != "0xa00f11" {
		t.Fatalf("vcpu-sig override: %+v", rep.Launch)
	}
}

func TestLaunchFromArgv(t *testing.T) {
	argv := []string{"qemu-system-x86_64", "-nodefaults", "-machine", "q35", "-cpu", "EPYC-v4,+x", "-smp", "cpus=4,maxcpus=8",
		"-bios", "/fw", "-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0 panic=1"}
	l, err := launchFromArgv(argv)
	if err != nil {
		t.Fatal(err)
	}
	if l.Firmware != "/fw" || l.Kernel != "/k" || l.Initrd != "/i" || l.Cmdline != "console=ttyS0 panic=1" || l.VCPUs != 4 || l.CPUModel != "EPYC-v4,+x" {
		t.Fatalf("%+v", l)
	}
	if _, err := launchFromArgv([]string{"-smp", "lots"}); err == nil {
		t.Fatal("bad -smp accepted")
	}
}

// A fake driver: configReport measures from whatever argv the driver gives.
func TestConfigReportUsesDriverArgv(t *testing.T) {
	cfgPath, _, kernel, _ := classFiles(t, "[tee]\nkind = \"snp\"\n")
	var seen hypervisor.Config
	fake := func(p *vmplan.Plan) ([]string, []string, error) {
		c := p.VM
		seen = c
		return []string{"-bios", c.Firmware, "-kernel", kernel, "-append", "from-driver", "-smp", "3", "-cpu", "EPYC-Genoa"}, []string{"a note"}, nil
	}
	o := &options{config: cfgPath, vmmType: "QEMU"}
	rep, err := configReport(o, fake)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Notes) != 1 || rep.Notes[0] != "driver: a note" {
		t.Fatalf("notes %q", rep.Notes)
	}
	if seen.TEE.Kind != tee.SNP || rep.Launch.Cmdline != "from-driver" || rep.Launch.VCPUs != 3 || rep.Launch.VCPUSig != "0xa10f10" || rep.Launch.Initrd != "" {
		t.Fatalf("launch %+v", rep.Launch)
	}
}
