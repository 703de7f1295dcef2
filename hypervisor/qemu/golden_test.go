package qemu

import (
	"bytes"
	"encoding/base64"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current builder")

// fakeHost is a host where every binary is in /usr/bin and every file
// exists, so plans do not depend on the machine the test runs on.
func fakeHost(vhostVsock bool) host {
	return host{
		lookPath: func(name string) (string, error) {
			if filepath.IsAbs(name) {
				return name, nil
			}
			return "/usr/bin/" + name, nil
		},
		stat: func(p string) (os.FileInfo, error) {
			if p == "/dev/vhost-vsock" && !vhostVsock {
				return nil, os.ErrNotExist
			}
			return os.Stat("/")
		},
		vhostDevice: "/dev/vhost-vsock",
	}
}

// seq returns n bytes 0, 1, 2, ... so launch data is recognisable in base64.
func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func baseConfig() hypervisor.Config {
	return hypervisor.Config{
		ID: "pod1", StateDir: "/run/coco/pod1", Machine: "q35", Accel: "tcg",
		VCPUs: 1, MemoryMiB: 512,
		Kernel: "/opt/coco/share/vmlinux", Initrd: "/opt/coco/share/initrd.img",
		Vsock: hypervisor.Vsock{Mode: "vhost-user"}, BootTimeout: 30 * time.Second,
	}
}

// tableConfigs covers every TEE and both vsock modes from hand-written
// configurations; configGoldens below covers the shipped files.
func tableConfigs() map[string]hypervisor.Config {
	firmware := func(c hypervisor.Config, fw string, t tee.Config) hypervisor.Config {
		c.Accel, c.Firmware, c.Kernel, c.TEE, c.CPUModel = "kvm", fw, "/opt/coco/share/vmlinuz", t, "EPYC-v4"
		c.Vsock.Mode = "vhost"
		return c
	}
	initdataDisk := hypervisor.Disk{ID: "initdata", Path: "/run/coco/pod1/initdata.img", ReadOnly: true}
	m := map[string]hypervisor.Config{}
	m["coco-dev"] = baseConfig()
	c := baseConfig()
	c.Vsock.Mode = "vhost"
	m["coco-dev-vhost"] = c
	c = baseConfig()
	c.Machine, c.KernelParams, c.VCPUs, c.MemoryMiB = "microvm", "agent.log=debug", 2, 1024
	m["microvm"] = c
	c = baseConfig()
	c.Disks = []hypervisor.Disk{initdataDisk, {ID: "data,1", Path: "/var/lib/x,y.img"}}
	c.Disks[1].ID = "data1"
	m["disks"] = c
	c = baseConfig()
	c.NICs = []hypervisor.NIC{
		{ID: "eth0", MAC: net.HardwareAddr{0x0a, 0x58, 0x0a, 0xfb, 0x01, 0x05}, MTU: 1500},
		{ID: "net1", MAC: net.HardwareAddr{0x0a, 0x58, 0x0a, 0xfb, 0x02, 0x06}},
	}
	m["nics"] = c
	c.MemoryHugePages = true // the memory file's fd follows the NICs'
	m["nics-hugepages"] = c
	c.Vsock.Mode = "vhost" // no daemon shares guest memory: a memfd
	m["nics-vhost"] = c

	m["sev"] = firmware(baseConfig(), "/opt/coco/share/OVMF.amdsev.fd", tee.Config{Kind: tee.SEV, SEV: &tee.SEVOptions{Policy: 0x1, CBitPos: 47, ReducedPhysBits: 1, KernelHashes: true}})
	c = firmware(baseConfig(), "/opt/coco/share/OVMF.amdsev.fd", tee.Config{Kind: tee.SEV}.WithDefaults())
	c.LaunchData = seq(32) // SEV has no field: must become a note
	m["sev-launchdata-note"] = c
	m["sev-es"] = firmware(baseConfig(), "/opt/coco/share/OVMF.amdsev.fd", tee.Config{Kind: tee.SEVES}.WithDefaults())
	m["snp"] = firmware(baseConfig(), "/opt/coco/share/OVMF.amdsev.fd", tee.Config{Kind: tee.SNP}.WithDefaults())
	c = firmware(baseConfig(), "/opt/coco/share/OVMF.amdsev.fd", tee.Config{Kind: tee.SNP}.WithDefaults())
	c.LaunchData, c.Disks = seq(32), []hypervisor.Disk{initdataDisk}
	m["snp-initdata"] = c
	c = firmware(baseConfig(), "/opt/coco/share/OVMF.amdsev.fd", tee.Config{Kind: tee.SNP, SNP: &tee.SNPOptions{
		Policy: 0x30000, CBitPos: 51, ReducedPhysBits: 1, KernelHashes: true,
		IDBlock: base64.StdEncoding.EncodeToString(seq(96)), IDAuth: base64.StdEncoding.EncodeToString(seq(64)), AuthorKeyEnabled: true}})
	m["snp-idblock"] = c
	c = firmware(baseConfig(), "/opt/coco/share/OVMF.inteltdx.fd", tee.Config{Kind: tee.TDX}.WithDefaults())
	c.CPUModel = "host"
	m["tdx"] = c
	c = firmware(baseConfig(), "/opt/coco/share/OVMF.inteltdx.fd", tee.Config{Kind: tee.TDX, TDX: &tee.TDXOptions{
		SeptVEDisable: true, Attributes: tee.TDXAttributeDebug, QuoteGenerationSocket: "vsock:2:4050"}})
	c.CPUModel, c.LaunchData, c.Disks = "host", seq(48), []hypervisor.Disk{initdataDisk}
	m["tdx-initdata"] = c
	c = baseConfig()
	c.Machine, c.Accel, c.Kernel, c.Initrd, c.TEE = "s390-ccw-virtio", "kvm", "/opt/coco/share/se.img", "", tee.Config{Kind: tee.SE}
	c.Vsock.Mode = "vhost"
	m["se"] = c
	c = baseConfig()
	c.Machine, c.Accel, c.TEE = "pseries", "kvm", tee.Config{Kind: tee.PEF}
	c.Vsock.Mode = "auto"
	m["pef"] = c
	return m
}

// render is what a golden file holds: argv one per line, then the notes.
func render(t *testing.T, vm *VM) []byte {
	t.Helper()
	args, notes, err := vm.Command()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, a := range args {
		b.WriteString(a + "\n")
	}
	for _, n := range notes {
		b.WriteString("# note: " + n + "\n")
	}
	return b.Bytes()
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the builder's output (go test -update rewrites it after review):\n--- want\n%s--- got\n%s", path, want, got)
	}
}

func TestGoldenTable(t *testing.T) {
	for name, cfg := range tableConfigs() {
		t.Run(name, func(t *testing.T) {
			vm, err := newVM(cfg, fakeHost(false), true)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "table-"+name, render(t, vm))
		})
	}
}

// TestGoldenConfigs pins the launch of every shipped configs/*.toml that
// selects the qemu driver, as it resolves on a node with kernel vhost-vsock
// (the production case), without and with init-data.
func TestGoldenConfigs(t *testing.T) {
	t.Setenv(configs.EnvShareDir, "/opt/coco/share")
	id, err := initdata.ReadFile(filepath.Join("testdata", "initdata.toml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, file := range configs.Names() {
		c, err := configs.LoadEmbedded(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if c.Hypervisor.Driver != "qemu" {
			continue
		}
		n++
		class := strings.TrimSuffix(strings.TrimPrefix(file, "configuration-"), ".toml")
		cfg, err := c.VM("pod1", "/run/coco/pod1")
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		// The loader resolves binaries through this host's PATH; pin them.
		cfg.Path = ""
		cfg.Vsock.DaemonPath = ""
		t.Run(class, func(t *testing.T) {
			vm, err := newVM(cfg, fakeHost(true), true)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "config-"+class, render(t, vm))
		})
		t.Run(class+"-initdata", func(t *testing.T) {
			cfg := cfg
			ld, note := initdata.Binding(cfg.TEE.Kind, id)
			cfg.LaunchData = ld
			cfg.Disks = []hypervisor.Disk{{ID: "initdata", Path: "/run/coco/pod1/initdata.img", ReadOnly: true}}
			vm, err := newVM(cfg, fakeHost(true), true)
			if err != nil {
				t.Fatal(err)
			}
			got := render(t, vm)
			if note != "" {
				got = append(got, []byte("# note: "+note+"\n")...)
			}
			checkGolden(t, "config-"+class+"-initdata", got)
		})
	}
	if n < 6 {
		t.Errorf("only %d qemu configurations shipped; expected coco-dev, sev, snp, tdx, se, pef at least", n)
	}
}
