package check

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// teeSupport is what the host kernel says about one TEE kind.
type teeSupport struct {
	Kind   tee.Kind
	OK     bool
	Detail string // the file read and its value, or why it is absent
	Fix    string // what to do when !OK
}

// hostTEEs reads the host's TEE switches under root (normally "/"), in the
// order SEV, SEV-ES, SNP, TDX, SE, PEF.
func hostTEEs(root string) []teeSupport {
	amd := "/sys/module/kvm_amd/parameters/"
	amdFix := func(p string) string {
		return "needs an AMD EPYC host with it enabled in the BIOS and kvm_amd loaded with " + p + "=1 " +
			"(e.g. options kvm_amd " + p + "=1 in /etc/modprobe.d)"
	}
	return []teeSupport{
		boolParam(root, tee.SEV, amd+"sev", amdFix("sev")),
		boolParam(root, tee.SEVES, amd+"sev_es", amdFix("sev_es")),
		boolParam(root, tee.SNP, amd+"sev_snp", amdFix("sev_snp")+" on a kernel with SNP host support"),
		boolParam(root, tee.TDX, "/sys/module/kvm_intel/parameters/tdx",
			"needs an Intel Xeon host with TDX enabled in the BIOS, a kernel with TDX host support and kvm_intel loaded with tdx=1"),
		boolParam(root, tee.SE, "/sys/firmware/uv/prot_virt_host",
			"needs an IBM z15 or newer LPAR booted with prot_virt=1 on the kernel command line"),
		exists(root, tee.PEF, "/sys/firmware/ultravisor",
			"needs a POWER9/10 host whose firmware runs the ultravisor (PEF enabled)"),
	}
}

// boolParam reads a kernel parameter file that says Y/N or 1/0.
func boolParam(root string, kind tee.Kind, path, fix string) teeSupport {
	s := teeSupport{Kind: kind, Fix: fix}
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		s.Detail = path + " absent"
		return s
	}
	v := strings.TrimSpace(string(b))
	s.OK = v == "Y" || v == "y" || v == "1"
	s.Detail = fmt.Sprintf("%s = %s", path, v)
	return s
}

func exists(root string, kind tee.Kind, path, fix string) teeSupport {
	s := teeSupport{Kind: kind, Fix: fix}
	if _, err := os.Stat(filepath.Join(root, path)); err != nil {
		s.Detail = path + " absent"
		return s
	}
	s.OK = true
	s.Detail = path + " present"
	return s
}

// teeObject is the QEMU object type (confidential-guest-support) of a kind.
func teeObject(k tee.Kind) string {
	switch k {
	case tee.SEV, tee.SEVES:
		return "sev-guest"
	case tee.SNP:
		return "sev-snp-guest"
	case tee.TDX:
		return "tdx-guest"
	case tee.SE:
		return "s390-pv-guest"
	case tee.PEF:
		return "pef-guest"
	}
	return ""
}

// teeObjects lists the TEE object types, in a fixed order.
func teeObjects() []string {
	return []string{"sev-guest", "sev-snp-guest", "tdx-guest", "s390-pv-guest", "pef-guest"}
}

// parseQEMUVersion takes the output of `qemu-system-* -version`. The
// pattern is compiled here, not at package init: this package is linked into
// the shim, which runs once per pod and never calls it.
func parseQEMUVersion(out string) (string, bool) {
	m := regexp.MustCompile(`(?m)^QEMU emulator version (\d+\.\d+(?:\.\d+)?)`).FindStringSubmatch(out)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// parseObjectHelp takes the output of `qemu-system-* -object help` and
// returns the set of user-creatable object types.
func parseObjectHelp(out string) map[string]bool {
	types := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		// Type names are indented; the header is not.
		if !strings.HasPrefix(line, " ") {
			continue
		}
		if name := strings.TrimSpace(line); name != "" && !strings.ContainsAny(name, " \t") {
			types[name] = true
		}
	}
	return types
}

// fileSHA256 hashes a regular file.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, fmt.Errorf("not a regular file")
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
