package configs

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// Each case is an overlay that must be refused with an error naming the file,
// the key and (in want) what is allowed or how to fix it.
func TestInvalidCombinations(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	cases := []struct {
		name, body, key, want string
	}{
		{"snp on microvm", "[hypervisor]\nmachine = \"microvm\"\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n",
			"hypervisor.machine", `allowed: "q35"`},
		{"sev on pseries", "[hypervisor]\nmachine = \"pseries\"\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"sev\"\n",
			"hypervisor.machine", `allowed: "q35"`},
		{"tdx on s390", "[hypervisor]\nmachine = \"s390-ccw-virtio\"\nfirmware = \"TDVF.fd\"\n[tee]\nkind = \"tdx\"\n",
			"hypervisor.machine", `allowed: "q35"`},
		{"se on q35", "[tee]\nkind = \"se\"\n", "hypervisor.machine", `allowed: "s390-ccw-virtio"`},
		{"pef on q35", "[tee]\nkind = \"pef\"\n", "hypervisor.machine", `allowed: "pseries"`},
		{"qemu snp without firmware", "[tee]\nkind = \"snp\"\n", "hypervisor.firmware", "OVMF"},
		{"clh snp without igvm", "[hypervisor]\ndriver = \"clh\"\n[tee]\nkind = \"snp\"\n", "hypervisor.igvm", "IGVM"},
		{"clh tdx without firmware", "[hypervisor]\ndriver = \"clh\"\n[tee]\nkind = \"tdx\"\n", "hypervisor.firmware", "TDVF"},
		{"clh with sev", "[hypervisor]\ndriver = \"clh\"\n[tee]\nkind = \"sev\"\n", "tee.kind", `allowed: "none", "snp", "tdx"`},
		{"clh with se", "[hypervisor]\ndriver = \"clh\"\n[tee]\nkind = \"se\"\n", "tee.kind", `driver "clh"`},
		{"clh with tcg", "[hypervisor]\ndriver = \"clh\"\naccel = \"tcg\"\n", "hypervisor.accel", "needs KVM"},
		{"tee with tools disk", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\ntools_image = \"tools.erofs\"\n[tee]\nkind = \"snp\"\n", "hypervisor.tools_image", "measured initrd"},
		{"tee with tcg", "[hypervisor]\naccel = \"tcg\"\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n", "hypervisor.accel", "a TEE needs KVM"},
		{"zero vcpus", "[hypervisor]\nvcpus = 0\n", "hypervisor.vcpus", "allowed 1-256"},
		{"absurd vcpus", "[hypervisor]\nvcpus = 100000\n", "hypervisor.vcpus", "allowed 1-256"},
		{"zero memory", "[hypervisor]\nmemory_mib = 0\n", "hypervisor.memory_mib", "allowed 128-1048576"},
		{"memory in bytes", "[hypervisor]\nmemory_mib = 536870912\n", "hypervisor.memory_mib", "not bytes"},
		{"console log in bytes", "[hypervisor]\nconsole_log_kib = 4194304\n", "hypervisor.console_log_kib", "allowed 64-1048576 (KiB, not bytes"},
		{"tiny console log", "[hypervisor]\nconsole_log_kib = 1\n", "hypervisor.console_log_kib", "allowed 64-1048576"},
		{"unknown accel", "[hypervisor]\naccel = \"hvf\"\n", "hypervisor.accel", `allowed: "auto", "kvm", "tcg"`},
		{"unknown driver", "[hypervisor]\ndriver = \"firecracker\"\n", "hypervisor.driver", `allowed: "qemu", "clh"`},
		{"unknown machine", "[hypervisor]\nmachine = \"pc\"\n", "hypervisor.machine", `"q35", "microvm", "pseries", "s390-ccw-virtio"`},
		{"unknown vsock mode", "[hypervisor.vsock]\nmode = \"hybrid\"\n", "hypervisor.vsock.mode", `allowed: "auto", "vhost", "vhost-user"`},
		{"unknown tee kind", "[tee]\nkind = \"sgx\"\n", "tee.kind", `"none", "sev", "sev-es", "snp", "tdx", "se", "pef"`},
		{"bad duration", "[hypervisor]\nboot_timeout = \"soon\"\n", "hypervisor.boot_timeout", `such as "30s"`},
		{"integer duration", "[hypervisor]\nboot_timeout = 10\n", "hypervisor.boot_timeout", `duration string`},
		{"zero duration", "[hypervisor]\nboot_timeout = \"0s\"\n", "hypervisor.boot_timeout", "more than 0"},
		{"negative duration", "[hypervisor]\nboot_timeout = \"-1s\"\n", "hypervisor.boot_timeout", "more than 0"},
		{"huge duration", "[hypervisor]\nboot_timeout = \"48h\"\n", "hypervisor.boot_timeout", "at most 1h"},
		{"empty kernel", "[hypervisor]\nkernel = \"\"\n", "hypervisor.kernel", "vmlinux"},
		{"relative share_dir", "[hypervisor]\nshare_dir = \"share\"\n", "hypervisor.share_dir", "absolute"},
		{"removed state_dir", "[runtime]\nstate_dir = \"/run/coco\"\n", "runtime.state_dir", "removed key: the shim keeps every pod's state under $COCO_RUN_DIR"},
		{"removed log_level", "[runtime]\nlog_level = \"debug\"\n", "runtime.log_level", "removed key: the shim logs at containerd's level"},
		{"removed fstype", "[rootfs]\nfstype = \"erofs\"\n", "rootfs.fstype", "removed key: container root filesystem images are always EROFS"},
		{"removed dial_timeout", "[agent]\ndial_timeout = \"10s\"\n", "agent.dial_timeout", "removed key: hypervisor.boot_timeout bounds"},
		{"bad glob", "[runtime]\nannotations_allowed = [\"io.[x\"]\n", "runtime.annotations_allowed[0]", "path.Match"},
		{"scratch without guest pull", "[rootfs]\nscratch_mib = 1024\n", "rootfs.scratch_mib", "set rootfs.guest_pull = true"},
		{"negative scratch", "[rootfs]\nguest_pull = true\nscratch_mib = -1\n", "rootfs.scratch_mib", "want 0"},
		{"sev policy with ES bit", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"sev\"\n[tee.sev]\npolicy = 0x5\n", "tee.sev.policy", "sev-es"},
		{"sev-es policy without ES bit", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"sev-es\"\n", "tee.sev.policy", "0x5"},
		{"sev cbitpos", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"sev\"\n[tee.sev]\ncbitpos = 0\n", "tee.sev.cbitpos", "allowed 32-63"},
		{"snp reserved bit", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n[tee.snp]\npolicy = 0x10000\n", "tee.snp.policy", "0x30000"},
		{"snp reduced phys bits", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n[tee.snp]\nreduced_phys_bits = 0\n", "tee.snp.reduced_phys_bits", "allowed 1-63"},
		{"snp id_block size", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n[tee.snp]\nid_block = \"" + b64(95) + "\"\nid_auth = \"" + b64(4096) + "\"\n", "tee.snp.id_block", "exactly 96 bytes"},
		{"snp id_block without id_auth", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n[tee.snp]\nid_block = \"" + b64(96) + "\"\n", "tee.snp.id_auth", "needs its id_auth"},
		{"snp id_auth too big", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n[tee.snp]\nid_block = \"" + b64(96) + "\"\nid_auth = \"" + b64(4097) + "\"\n", "tee.snp.id_auth", "at most 4096"},
		{"snp author key without id_auth", "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n[tee.snp]\nauthor_key_enabled = true\n", "tee.snp.author_key_enabled", "id_auth"},
		{"tdx bad qgs", "[hypervisor]\nfirmware = \"TDVF.fd\"\n[tee]\nkind = \"tdx\"\n[tee.tdx]\nquote_generation_socket = \"vsock:2\"\n", "tee.tdx.quote_generation_socket", `"vsock:CID:PORT"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, "configuration-bad.toml", tc.body)
			_, err := load(p, noEnv)
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("not ErrInvalidArgument: %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, p+": "+tc.key+": ") {
				t.Errorf("error does not name file and key %q:\n%s", tc.key, msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error does not say %q:\n%s", tc.want, msg)
			}
		})
	}
}

// The valid neighbours of the invalid cases load, so the checks above are
// not refusing everything.
func TestValidCombinations(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	cases := map[string]string{
		"sev-es":         "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"sev-es\"\n[tee.sev]\npolicy = 0x5\n",
		"snp id block":   "[hypervisor]\nfirmware = \"OVMF.amdsev.fd\"\n[tee]\nkind = \"snp\"\n[tee.snp]\nid_block = \"" + b64(96) + "\"\nid_auth = \"" + b64(4096) + "\"\nauthor_key_enabled = true\n",
		"tdx vsock qgs":  "[hypervisor]\nfirmware = \"TDVF.fd\"\n[tee]\nkind = \"tdx\"\n[tee.tdx]\nquote_generation_socket = \"vsock:2:4050\"\n",
		"tdx unix qgs":   "[hypervisor]\nfirmware = \"TDVF.fd\"\n[tee]\nkind = \"tdx\"\n[tee.tdx]\nquote_generation_socket = \"/var/run/tdx-qgs/qgs.socket\"\n",
		"microvm tcg":    "[hypervisor]\nmachine = \"microvm\"\naccel = \"tcg\"\nvcpus = 2\nmemory_mib = 1024\n",
		"vhost":          "[hypervisor.vsock]\nmode = \"vhost\"\ndaemon_path = \"\"\n",
		"clh none":       "[hypervisor]\ndriver = \"clh\"\n",
		"glob":           "[runtime]\nannotations_allowed = [\"io.katacontainers.*\"]\n",
		"empty overlay":  "",
		"comments only":  "# nothing\n",
		"max resources":  "[hypervisor]\nvcpus = 256\nmemory_mib = 1048576\n",
		"long durations": "[hypervisor]\nboot_timeout = \"1h\"\n",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := load(writeFile(t, "c.toml", body), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.VM("p", "/run/coco/p"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// All problems of a file are reported at once.
func TestAllProblemsReported(t *testing.T) {
	p := writeFile(t, "c.toml", "[hypervisor]\nvcpus = 0\naccel = \"x\"\n[volumes]\nhost_dirs = \"loud\"\n[network]\ninterfaces = \"bridge\"\n")
	_, err := load(p, noEnv)
	if err == nil {
		t.Fatal("no error")
	}
	for _, k := range []string{"hypervisor.vcpus", "hypervisor.accel", "volumes.host_dirs", "network.interfaces"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("%s missing from %v", k, err)
		}
	}
}
