package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// fakeRoot builds a directory tree standing in for / with the given files
// (path → content; a trailing "/" makes a directory).
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestHostTEEs(t *testing.T) {
	root := fakeRoot(t, map[string]string{
		"sys/module/kvm_amd/parameters/sev":     "Y\n",
		"sys/module/kvm_amd/parameters/sev_es":  "N\n",
		"sys/module/kvm_amd/parameters/sev_snp": "1\n",
		"sys/firmware/uv/prot_virt_host":        "0\n",
		"sys/firmware/ultravisor/":              "",
	})
	got := map[tee.Kind]teeSupport{}
	for _, s := range hostTEEs(root) {
		got[s.Kind] = s
	}
	want := map[tee.Kind]bool{tee.SEV: true, tee.SEVES: false, tee.SNP: true, tee.TDX: false, tee.SE: false, tee.PEF: true}
	if len(got) != len(want) {
		t.Fatalf("got %d kinds", len(got))
	}
	for k, ok := range want {
		if got[k].OK != ok {
			t.Errorf("%s: OK = %v, want %v (%s)", k, got[k].OK, ok, got[k].Detail)
		}
		if !got[k].OK && got[k].Fix == "" {
			t.Errorf("%s: no fix", k)
		}
	}
	if d := got[tee.TDX].Detail; d != "/sys/module/kvm_intel/parameters/tdx absent" {
		t.Errorf("tdx detail %q", d)
	}
	if d := got[tee.SEVES].Detail; d != "/sys/module/kvm_amd/parameters/sev_es = N" {
		t.Errorf("sev_es detail %q", d)
	}
	// An empty root has nothing.
	for _, s := range hostTEEs(t.TempDir()) {
		if s.OK {
			t.Errorf("%s available on an empty root", s.Kind)
		}
	}
}

func TestParseQEMUVersion(t *testing.T) {
	cases := map[string]string{
		"QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025\n": "10.0.2",
		"QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)\n":                                  "7.2.15",
		"QEMU emulator version 9.1\n":                  "9.1",
		"warning: foo\nQEMU emulator version 11.0.0\n": "11.0.0",
	}
	for in, want := range cases {
		if got, ok := parseQEMUVersion(in); !ok || got != want {
			t.Errorf("parseQEMUVersion(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "cloud-hypervisor v41.0.0", "qemu-system-x86_64: -version: invalid option"} {
		if v, ok := parseQEMUVersion(bad); ok {
			t.Errorf("parseQEMUVersion(%q) = %q, want no match", bad, v)
		}
	}
}

func TestParseObjectHelp(t *testing.T) {
	out := "List of user creatable objects:\n  authz-list\n  sev-guest\n  sev-snp-guest\n  thread-context\n"
	got := parseObjectHelp(out)
	for _, w := range []string{"sev-guest", "sev-snp-guest", "authz-list", "thread-context"} {
		if !got[w] {
			t.Errorf("missing %s", w)
		}
	}
	if got["tdx-guest"] || got["List"] || len(got) != 4 {
		t.Errorf("got %v", got)
	}
	if len(parseObjectHelp("qemu: unknown option\n")) != 0 {
		t.Error("error text parsed as types")
	}
}

func TestFileSHA256(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, n, err := fileSHA256(p)
	if err != nil || n != 3 || sum != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("%s %d %v", sum, n, err)
	}
	if _, _, err := fileSHA256(filepath.Dir(p)); err == nil {
		t.Error("a directory hashed")
	}
}
