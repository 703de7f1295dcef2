package clh

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

var update = flag.Bool("update", false, "rewrite testdata/golden files from the current output")

// testInitData is a small init-data document; its sha384 digest, cut to
// SNP's 32-byte HOST_DATA, is what the driver must send as host_data.
const testInitData = `version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs.kbs]
url = "http://127.0.0.1:8080"
'''
`

// fittedDigest fits the init-data digest to n bytes (cut or zero-padded at
// the end), as the init-data spec binds it.
func fittedDigest(n int) []byte {
	d := sha512.Sum384([]byte(testInitData))
	out := make([]byte, n)
	copy(out, d[:])
	return out
}

// testConfig returns a config whose files exist under a fresh directory,
// plus that directory. The binary is a script that is never run here.
func testConfig(t *testing.T, kind tee.Kind) (hypervisor.Config, string) {
	t.Helper()
	base := t.TempDir()
	share := filepath.Join(base, "share")
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vmlinux", "vmlinuz", "initrd.img", "OVMF.fd", "TDVF.fd", "coco.igvm", "initdata.img"} {
		if err := os.WriteFile(filepath.Join(share, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(share, "cloud-hypervisor")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := hypervisor.Config{
		ID:           "pod1",
		StateDir:     filepath.Join(base, "state"),
		Driver:       "clh",
		Path:         bin,
		Accel:        "auto",
		VCPUs:        2,
		MemoryMiB:    512,
		Kernel:       filepath.Join(share, "vmlinux"),
		Initrd:       filepath.Join(share, "initrd.img"),
		KernelParams: "console=ttyS0 quiet",
		TEE:          tee.Config{Kind: kind},
		Disks:        []hypervisor.Disk{{ID: "initdata", Path: filepath.Join(share, "initdata.img"), ReadOnly: true, Format: "raw"}},
	}
	switch kind {
	case tee.SNP:
		cfg.Kernel = filepath.Join(share, "vmlinuz")
		cfg.IGVM = filepath.Join(share, "coco.igvm")
		cfg.TEE.SNP = &tee.SNPOptions{Policy: 0x30000}
		cfg.LaunchData = fittedDigest(tee.SNP.LaunchDataSize())
	case tee.TDX:
		cfg.Kernel = filepath.Join(share, "vmlinuz")
		cfg.Firmware = filepath.Join(share, "TDVF.fd")
		cfg.TEE.TDX = &tee.TDXOptions{}
	}
	return cfg, base
}

// testMAC is a locally administered unicast address.
func testMAC(i int) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, byte(i + 1)} }

// testNICs returns n NICs whose taps are temporary files: the driver only
// passes them on, and the fake VMM identifies what it received by inode.
func testNICs(t *testing.T, n int) []hypervisor.NIC {
	t.Helper()
	var nics []hypervisor.NIC
	for i := range n {
		f, err := os.CreateTemp(t.TempDir(), "tap")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		nics = append(nics, hypervisor.NIC{ID: fmt.Sprintf("net%d", i), Tap: f, MAC: testMAC(i), MTU: 1500 - 50*i})
	}
	return nics
}

// fileID names the file f refers to as the fake VMM does ("dev:ino").
func fileID(t *testing.T, f *os.File) string {
	t.Helper()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", sys.Dev, sys.Ino)
}

// body returns the vm.create JSON that New plans for cfg, checked against
// the schema.
func body(t *testing.T, cfg hypervisor.Config) map[string]any {
	t.Helper()
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lines, _, err := v.Command()
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte(strings.Join(lines, "\n"))
	if err := mustLoadOpenAPI(t).validateJSON("VmConfig", raw); err != nil {
		t.Fatalf("vm.create body breaks the schema: %v\n%s", err, raw)
	}
	if msg := checkLikeCLH(raw); msg != "" {
		t.Fatalf("Cloud Hypervisor would refuse the body: %s\n%s", msg, raw)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func obj(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	o, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("%s: want object, got %#v", key, m[key])
	}
	return o
}

func TestSNPConfig(t *testing.T) {
	cfg, _ := testConfig(t, tee.SNP)
	m := body(t, cfg)
	if p := obj(t, m, "platform"); p["sev_snp"] != true || p["tdx"] != nil {
		t.Errorf("platform = %v, want only sev_snp: true", p)
	}
	pl := obj(t, m, "payload")
	if pl["igvm"] != cfg.IGVM {
		t.Errorf("payload.igvm = %v, want %s", pl["igvm"], cfg.IGVM)
	}
	want := hex.EncodeToString(fittedDigest(32))
	if pl["host_data"] != want || len(want) != 64 {
		t.Errorf("payload.host_data = %v, want the 32-byte fitted sha384 digest in hex %s", pl["host_data"], want)
	}
	if pl["firmware"] != nil {
		t.Errorf("payload.firmware = %v, want none (SNP boots from IGVM)", pl["firmware"])
	}

	// Without init-data there is no host_data at all (not 64 zeros).
	cfg.LaunchData = nil
	if pl := obj(t, body(t, cfg), "payload"); pl["host_data"] != nil {
		t.Errorf("host_data without init-data = %v, want absent", pl["host_data"])
	}
}

func TestTDXConfig(t *testing.T) {
	cfg, _ := testConfig(t, tee.TDX)
	cfg.VCPUs = 4
	m := body(t, cfg)
	if p := obj(t, m, "platform"); p["tdx"] != true || p["sev_snp"] != nil {
		t.Errorf("platform = %v, want only tdx: true", p)
	}
	if pl := obj(t, m, "payload"); pl["firmware"] != cfg.Firmware || pl["igvm"] != nil || pl["host_data"] != nil {
		t.Errorf("payload = %v, want firmware %s and no igvm/host_data", pl, cfg.Firmware)
	}
	c := obj(t, m, "cpus")
	if c["boot_vcpus"] != 4.0 || c["max_vcpus"] != 4.0 {
		t.Errorf("cpus = %v, want boot_vcpus == max_vcpus == 4 (TDX forbids vCPU hot-plug)", c)
	}
}

func TestPlainConfig(t *testing.T) {
	cfg, _ := testConfig(t, tee.None)
	cfg.Disks = append(cfg.Disks, hypervisor.Disk{ID: "scratch", Path: cfg.Disks[0].Path})
	m := body(t, cfg)
	if m["platform"] != nil {
		t.Errorf("platform = %v, want absent for TEE none", m["platform"])
	}
	pl := obj(t, m, "payload")
	if pl["kernel"] != cfg.Kernel || pl["initramfs"] != cfg.Initrd || pl["cmdline"] != cfg.KernelParams {
		t.Errorf("payload = %v", pl)
	}
	if mem := obj(t, m, "memory"); mem["size"] != float64(512<<20) {
		t.Errorf("memory.size = %v, want %d bytes", mem["size"], 512<<20)
	}
	vs := obj(t, m, "vsock")
	if vs["cid"] != 3.0 || vs["socket"] != filepath.Join(cfg.StateDir, "vsock.sock") {
		t.Errorf("vsock = %v", vs)
	}
	if s := obj(t, m, "serial"); s["mode"] != "File" || s["file"] != filepath.Join(cfg.StateDir, "console.pipe") {
		t.Errorf("serial = %v", s)
	}
	disks, _ := m["disks"].([]any)
	if len(disks) != 2 {
		t.Fatalf("disks = %v, want 2", m["disks"])
	}
	for i, want := range []struct {
		id string
		ro bool
	}{{"initdata", true}, {"scratch", false}} {
		d := disks[i].(map[string]any)
		if d["id"] != want.id || d["serial"] != want.id || d["readonly"] != want.ro || d["image_type"] != "Raw" {
			t.Errorf("disks[%d] = %v, want id=serial=%s readonly=%v image_type=Raw", i, d, want.id, want.ro)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		kind   tee.Kind
		mutate func(c *hypervisor.Config)
		want   []string
	}{
		{"missing binary", tee.None, func(c *hypervisor.Config) { c.Path = "/nonexistent/cloud-hypervisor" }, []string{"hypervisor binary", "/nonexistent/cloud-hypervisor", "does not exist"}},
		{"binary not set", tee.None, func(c *hypervisor.Config) { c.Path = "" }, []string{"hypervisor binary (path) is not set"}},
		{"binary not executable", tee.None, func(c *hypervisor.Config) { c.Path = c.Kernel }, []string{"not executable", "vmlinux"}},
		{"missing kernel", tee.None, func(c *hypervisor.Config) { c.Kernel = "/nonexistent/vmlinux" }, []string{"kernel", "/nonexistent/vmlinux"}},
		{"missing initrd", tee.None, func(c *hypervisor.Config) { c.Initrd = "/nonexistent/initrd" }, []string{"initrd", "/nonexistent/initrd"}},
		{"kernel is a directory", tee.None, func(c *hypervisor.Config) { c.Kernel = filepath.Dir(c.Kernel) }, []string{"kernel", "not a regular file"}},
		{"nothing to boot", tee.None, func(c *hypervisor.Config) { c.Kernel, c.Initrd = "", "" }, []string{"nothing to boot", "set kernel"}},
		{"missing firmware", tee.TDX, func(c *hypervisor.Config) { c.Firmware = "/nonexistent/TDVF.fd" }, []string{"firmware", "/nonexistent/TDVF.fd"}},
		{"missing igvm", tee.SNP, func(c *hypervisor.Config) { c.IGVM = "/nonexistent/x.igvm" }, []string{"igvm", "/nonexistent/x.igvm"}},
		{"snp without igvm", tee.SNP, func(c *hypervisor.Config) { c.IGVM = "" }, []string{"snp needs an igvm", "set igvm"}},
		{"snp launch data size", tee.SNP, func(c *hypervisor.Config) { c.LaunchData = make([]byte, 48) }, []string{"48 bytes, want 32"}},
		{"snp id block", tee.SNP, func(c *hypervisor.Config) { c.TEE.SNP.IDBlock = "AAAA" }, []string{"id_block", "QEMU SNP runtime class"}},
		{"tdx without firmware", tee.TDX, func(c *hypervisor.Config) { c.Firmware = "" }, []string{"tdx needs firmware", "set firmware"}},
		{"tdx with init-data", tee.TDX, func(c *hypervisor.Config) { c.LaunchData = fittedDigest(48) }, []string{"no MRCONFIGID field", "QEMU TDX runtime class"}},
		{"igvm without snp", tee.None, func(c *hypervisor.Config) { c.IGVM = c.Kernel }, []string{"igvm", "SNP only"}},
		{"sev unsupported", tee.None, func(c *hypervisor.Config) { c.TEE = tee.Config{Kind: tee.SEV} }, []string{`TEE "sev" is not supported`, "QEMU"}},
		{"wrong driver", tee.None, func(c *hypervisor.Config) { c.Driver = "qemu" }, []string{`driver "qemu"`}},
		{"tcg", tee.None, func(c *hypervisor.Config) { c.Accel = "tcg" }, []string{`accel "tcg"`, "KVM"}},
		{"relative state dir", tee.None, func(c *hypervisor.Config) { c.StateDir = "state" }, []string{"state directory", "absolute"}},
		{"long state dir", tee.None, func(c *hypervisor.Config) { c.StateDir = "/" + strings.Repeat("d", 100) }, []string{"too long for unix sockets"}},
		{"no vcpus", tee.None, func(c *hypervisor.Config) { c.VCPUs = 0 }, []string{"vcpus"}},
		{"no memory", tee.None, func(c *hypervisor.Config) { c.MemoryMiB = 0 }, []string{"memory"}},
		{"disk without id", tee.None, func(c *hypervisor.Config) { c.Disks[0].ID = "" }, []string{"disks[0]", "no id"}},
		{"disk reserved id", tee.None, func(c *hypervisor.Config) { c.Disks[0].ID = "__x" }, []string{`"__x"`, `"__"`}},
		{"disk id too long", tee.None, func(c *hypervisor.Config) { c.Disks[0].ID = strings.Repeat("x", 21) }, []string{"20-byte virtio-blk serial"}},
		{"disk qcow2", tee.None, func(c *hypervisor.Config) { c.Disks[0].Format = "qcow2" }, []string{`format "qcow2"`, "raw"}},
		{"disk missing", tee.None, func(c *hypervisor.Config) { c.Disks[0].Path = "/nonexistent/initdata.img" }, []string{"disk initdata", "/nonexistent/initdata.img"}},
		{"disk id twice", tee.None, func(c *hypervisor.Config) { c.Disks = append(c.Disks, c.Disks[0]) }, []string{"disks[1]", "used twice"}},
		{"nic bad id", tee.None, func(c *hypervisor.Config) { c.NICs = []hypervisor.NIC{{ID: "eth 0", MAC: testMAC(0)}} }, []string{"nic 0", `"eth 0"`, "[A-Za-z0-9_-]"}},
		{"nic id twice", tee.None, func(c *hypervisor.Config) {
			c.NICs = []hypervisor.NIC{{ID: "n", MAC: testMAC(0)}, {ID: "n", MAC: testMAC(1)}}
		}, []string{"nic 1", "used twice"}},
		{"nic id is a disk's", tee.None, func(c *hypervisor.Config) {
			c.Disks[0].ID = "nic-net0"
			c.NICs = []hypervisor.NIC{{ID: "net0", MAC: testMAC(0)}}
		}, []string{`nic "net0"`, `"nic-net0" is also a disk's id`}},
		{"nic multicast mac", tee.None, func(c *hypervisor.Config) {
			c.NICs = []hypervisor.NIC{{ID: "net0", MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}}}
		}, []string{`nic "net0"`, "unicast"}},
		{"nic no mac", tee.None, func(c *hypervisor.Config) { c.NICs = []hypervisor.NIC{{ID: "net0"}} }, []string{`nic "net0"`, "6-byte"}},
		{"nic mtu", tee.None, func(c *hypervisor.Config) { c.NICs = []hypervisor.NIC{{ID: "net0", MAC: testMAC(0), MTU: 67}} }, []string{`nic "net0"`, "mtu 67", "68-65535"}},
		{"too many nics", tee.None, func(c *hypervisor.Config) {
			for i := range 9 {
				c.NICs = append(c.NICs, hypervisor.NIC{ID: fmt.Sprintf("net%d", i), MAC: testMAC(i)})
			}
		}, []string{"9 network interfaces, at most 8", "fewer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := testConfig(t, tc.kind)
			tc.mutate(&cfg)
			v, err := New(cfg)
			if err == nil {
				t.Fatalf("New accepted the config: %+v", v.plan.body)
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("error class: %v, want ErrInvalidArgument", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if _, serr := os.Stat(cfg.StateDir); serr == nil {
				t.Errorf("New created the state directory %s", cfg.StateDir)
			}
		})
	}
}

func TestCommandNotes(t *testing.T) {
	cfg, _ := testConfig(t, tee.None)
	cfg.LaunchData = []byte{1}
	cfg.Vsock.Mode = "vhost"
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, notes, err := v.Command()
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(notes, "\n")
	for _, w := range []string{"--api-socket path=" + filepath.Join(cfg.StateDir, "clh.sock"), "init-data digest not bound", `vsock mode "vhost" ignored`} {
		if !strings.Contains(all, w) {
			t.Errorf("notes %q lack %q", all, w)
		}
	}
}

// TestGoldenCommand pins the vm.create body for each TEE. Run with -update
// to rewrite, then review the diff by eye.
func TestGoldenCommand(t *testing.T) {
	for _, tc := range []struct {
		name     string
		kind     tee.Kind
		initData bool
		nics     bool
	}{
		{"snp", tee.SNP, true, false},
		{"snp-no-initdata", tee.SNP, false, false},
		{"tdx", tee.TDX, false, false},
		{"none", tee.None, false, false},
		{"snp-nics", tee.SNP, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, base := testConfig(t, tc.kind)
			if !tc.initData {
				cfg.LaunchData = nil
			}
			v, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.nics {
				if err := v.AttachNICs(testNICs(t, 2)); err != nil {
					t.Fatal(err)
				}
			}
			lines, notes, err := v.Command()
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			for _, l := range lines {
				got.WriteString(strings.ReplaceAll(l, base, "/TEST") + "\n")
			}
			got.WriteString("\n# notes\n")
			for _, n := range notes {
				got.WriteString("# " + strings.ReplaceAll(n, base, "/TEST") + "\n")
			}
			path := filepath.Join("testdata", "golden", tc.name+".txt")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("Command() for %s differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", tc.name, path, got.Bytes(), want)
			}
		})
	}
}
