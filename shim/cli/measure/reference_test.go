package measure

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgainstReferenceTool runs Main and virtee/sev-snp-measure side by side
// over full firmware images and real guest kernels, when both are at hand:
//
//	COCO_SEV_SNP_MEASURE=/path/to/sev-snp-measure.py \
//	COCO_MEASURE_OVMF=/usr/share/ovmf/OVMF.amdsev.fd:/usr/share/ovmf/OVMF.fd \
//	go test -run AgainstReferenceTool ./shim/cli/measure/
//
// The kernel and initrd are build/guest/vmlinuz and initrd.img (make
// guest-assets). Outputs, including error exits, must be identical.
func TestAgainstReferenceTool(t *testing.T) {
	tool, fws := os.Getenv("COCO_SEV_SNP_MEASURE"), os.Getenv("COCO_MEASURE_OVMF")
	if tool == "" || fws == "" {
		t.Skip("set COCO_SEV_SNP_MEASURE (the reference tool) and COCO_MEASURE_OVMF (firmware images, ':'-separated) to compare digests over real inputs")
	}
	kernel, _ := filepath.Abs("../../../build/guest/vmlinuz")
	initrd, _ := filepath.Abs("../../../build/guest/initrd.img")
	if _, err := os.Stat(kernel); err != nil {
		t.Skipf("no guest kernel at %s (make guest-assets): %v", kernel, err)
	}
	var cases [][]string
	for _, fw := range strings.Split(fws, ":") {
		for _, mode := range []string{"snp", "seves"} {
			for _, vmm := range []string{"QEMU", "ec2", "gce"} {
				for _, cpu := range [][]string{{"--vcpu-type", "EPYC-Milan"}, {"--vcpu-sig", "0xa10f11"}, {"--vcpu-family", "26", "--vcpu-model", "17", "--vcpu-stepping", "0"}} {
					for _, n := range []string{"1", "4"} {
						args := append([]string{"--mode", mode, "--vcpus", n, "--vmm-type", vmm, "--ovmf", fw}, cpu...)
						cases = append(cases, args, append(args, "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0 panic=1"))
					}
				}
			}
		}
		cases = append(cases, []string{"--mode", "sev", "--ovmf", fw, "--kernel", kernel, "--initrd", initrd},
			[]string{"--mode", "snp:ovmf-hash", "--ovmf", fw},
			[]string{"--mode", "snp", "--vcpus", "2", "--vcpu-type", "EPYC-v4", "--ovmf", fw, "--kernel", kernel, "--guest-features", "0x21", "--output-format", "base64"})
	}
	for _, args := range cases {
		ref, refErr := exec.Command("python3", append([]string{tool}, args...)...).Output()
		code, out, _ := run(t, args...)
		if (refErr == nil) != (code == 0) || (code == 0 && out != string(ref)) {
			t.Errorf("%q:\n reference %q (%v)\n ours      %q (exit %d)", args, ref, refErr, out, code)
		}
	}
	t.Logf("%d launches compared with %s", len(cases), tool)
}
