package measure

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/sandbox/vmplan"
)

// shareDir holds what the shipped SEV and SNP classes read: the AmdSev
// firmware (the 4 KiB footer of a real build) and a kernel and initrd.
func shareDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	fw, err := os.ReadFile(fixtures + "ovmf_AmdSev_suffix.bin")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"OVMF.amdsev.fd": fw, "vmlinuz": []byte("kernel bytes"), "initrd.img": []byte("initrd bytes")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Every shipped runtime class gets an answer from measure --config: a launch
// digest equal to the one computed from explicit flags over the same inputs,
// or the named reason why not and what a verifier pins instead.
func TestEveryShippedClass(t *testing.T) {
	t.Setenv(configs.EnvShareDir, shareDir(t))
	computed := map[string]bool{}
	for _, name := range configs.Names() {
		t.Run(name, func(t *testing.T) {
			code, out, errs := run(t, "--config", filepath.Join("../../../configs", name))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			var rep Report
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if rep.Launch == nil || rep.Launch.Kernel == "" {
				t.Fatalf("no launch described: %s", out)
			}
			if rep.Measurement == nil {
				n := rep.NotComputed
				if n == nil || n.Reason == "" || n.From == "" || !strings.Contains(errs, "cannot compute here: "+n.Reason) ||
					!strings.Contains(errs, rep.RuntimeClass) {
					t.Fatalf("no digest and no reason: %+v, stderr %q", n, errs)
				}
				t.Logf("%s: %s", rep.RuntimeClass, n)
				return
			}
			computed[rep.TEE] = true
			l := rep.Launch
			if !l.KernelHashes || l.Initrd == "" || !strings.HasSuffix(l.Firmware, "OVMF.amdsev.fd") {
				t.Fatalf("a computed class must measure kernel, initrd and command line through the AmdSev firmware: %+v", l)
			}
			args := []string{"--mode", l.Mode, "--ovmf", l.Firmware, "--kernel", l.Kernel, "--initrd", l.Initrd, "--append", l.Cmdline}
			if l.Mode != "sev" {
				args = append(args, "--vcpus", "1", "--vcpu-type", l.CPUModel)
			}
			if code, want, errs := run(t, args...); code != 0 || want != rep.Measurement.Hex+"\n" {
				t.Fatalf("explicit flags %q give %q (%s), config %s", args, want, errs, rep.Measurement.Hex)
			}
		})
	}
	for _, kind := range []string{"sev", "snp"} {
		if !computed[kind] {
			t.Errorf("no shipped class computed a %s digest", kind)
		}
	}
}

// The report's digest is bit-exact with the reference vectors: each vector
// that boots a kernel through the AmdSev firmware, run as a runtime class
// whose driver emits the vector's command line, vCPUs and CPU.
func TestConfigMatchesVectors(t *testing.T) {
	kinds := map[string]string{"sev": "[tee]\nkind = \"sev\"\n", "seves": "[tee]\nkind = \"sev-es\"\n[tee.sev]\npolicy = 0x5\n", "snp": "[tee]\nkind = \"snp\"\n"}
	checked := map[string]int{}
	for label, dir := range vectorDirs() {
		rows, _ := tsvRows(t, filepath.Join(dir, "vectors.tsv"))
		for _, row := range rows {
			teeTable, ok := kinds[row["mode"]]
			if !ok || row["ovmf"] != "ovmf_AmdSev_suffix.bin" || row["kernel"] == "-" || row["vmm_type"] != "" && row["vmm_type"] != "-" && row["vmm_type"] != "QEMU" {
				continue
			}
			cfgPath, _, _, _ := classFiles(t, teeTable)
			argv := []string{"-bios", resolve(dir, row["ovmf"]), "-kernel", resolve(dir, row["kernel"]), "-append", row["append"]}
			if row["initrd"] != "-" {
				argv = append(argv, "-initrd", resolve(dir, row["initrd"]))
			}
			if v := row["vcpus"]; v != "-" {
				argv = append(argv, "-smp", v)
			}
			o := &options{config: cfgPath, vmmType: "QEMU"}
			switch {
			case row["vcpu_type"] != "" && row["vcpu_type"] != "-":
				argv = append(argv, "-cpu", row["vcpu_type"])
			case row["vcpu_sig"] != "" && row["vcpu_sig"] != "-":
				argv = append(argv, "-cpu", "host")
				if err := o.vcpuSig.Set(row["vcpu_sig"]); err != nil {
					t.Fatal(err)
				}
			}
			if gf := row["guest_features"]; gf != "" && gf != "-" {
				if err := o.guestFeatures.Set(gf); err != nil {
					t.Fatal(err)
				}
			}
			driver := func(*vmplan.Plan) ([]string, []string, error) { return argv, nil, nil }
			rep, err := configReport(o, driver)
			if err != nil {
				t.Fatalf("%s %v: %v", label, row, err)
			}
			if rep.Measurement == nil || rep.Measurement.Hex != row["expected"] {
				t.Errorf("%s %v: config gives %+v, want %s", label, row, rep.Measurement, row["expected"])
			}
			checked[row["mode"]]++
		}
	}
	for mode := range kinds {
		if checked[mode] == 0 {
			t.Errorf("no vector of mode %s went through --config", mode)
		}
	}
	t.Logf("vectors checked through --config: %v", checked)
}

// A class whose firmware cannot check the kernel hashes, or that turns them
// off, is refused with the key and the fix, never measured.
func TestConfigRefusesUnmeasuredBoot(t *testing.T) {
	cfgPath, _, _, _ := classFiles(t, "[tee]\nkind = \"snp\"\n")
	b, _ := os.ReadFile(cfgPath)
	plain := strings.Replace(string(b), "ovmf_AmdSev_suffix.bin", "ovmf_OvmfX64_suffix.bin", 1)
	os.WriteFile(cfgPath, []byte(plain), 0o600)
	if code, out, errs := run(t, "--config", cfgPath); code != 1 || out != "" ||
		!strings.Contains(errs, "hypervisor.firmware") || !strings.Contains(errs, "not the AmdSev build") || !strings.Contains(errs, "OVMF.amdsev.fd") {
		t.Fatalf("generic OVMF: exit %d, stderr %s", code, errs)
	}
	cfgPath, _, _, _ = classFiles(t, "[tee]\nkind = \"sev\"\n[tee.sev]\nkernel_hashes = false\n")
	if code, _, errs := run(t, "--config", cfgPath); code != 1 || !strings.Contains(errs, "tee.sev.kernel_hashes") || !strings.Contains(errs, "unmeasured") {
		t.Fatalf("kernel_hashes off: exit %d, stderr %s", code, errs)
	}
}

// tsvRows reads a vectors.tsv into maps keyed by its header, with each
// row's line number; a row with another column count fails the test.
func tsvRows(t *testing.T, path string) (rows []map[string]string, lines []int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	for n, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		cols := strings.Split(line, "\t")
		if header == nil {
			header = cols
			continue
		}
		if len(cols) != len(header) {
			t.Fatalf("%s:%d: %d columns, want %d", path, n+1, len(cols), len(header))
		}
		row := map[string]string{}
		for i, c := range cols {
			row[header[i]] = c
		}
		rows, lines = append(rows, row), append(lines, n+1)
	}
	return rows, lines
}
