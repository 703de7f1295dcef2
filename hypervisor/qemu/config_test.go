package qemu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// TestResolveErrors: each bad configuration is refused before anything
// runs, with an error naming the key (or path) and errdefs.ErrInvalidArgument.
func TestResolveErrors(t *testing.T) {
	cases := map[string]struct {
		mod  func(*hypervisor.Config)
		want string
	}{
		"machine":          {func(c *hypervisor.Config) { c.Machine = "pc-i440fx" }, `hypervisor.machine = "pc-i440fx"`},
		"accel":            {func(c *hypervisor.Config) { c.Accel = "hvf" }, `hypervisor.accel = "hvf"`},
		"tee on tcg":       {func(c *hypervisor.Config) { c.TEE = tee.Config{Kind: tee.SNP} }, `a TEE needs KVM`},
		"tee on microvm":   {func(c *hypervisor.Config) { c.Machine, c.Accel, c.TEE = "microvm", "kvm", tee.Config{Kind: tee.TDX} }, `cannot run on hypervisor.machine = "microvm"`},
		"se on q35":        {func(c *hypervisor.Config) { c.Accel, c.TEE = "kvm", tee.Config{Kind: tee.SE} }, "SE needs s390-ccw-virtio"},
		"unknown tee":      {func(c *hypervisor.Config) { c.TEE = tee.Config{Kind: "cca"} }, `unknown TEE kind "cca"`},
		"vsock mode":       {func(c *hypervisor.Config) { c.Vsock.Mode = "tcp" }, `hypervisor.vsock.mode = "tcp"`},
		"vhost-user s390":  {func(c *hypervisor.Config) { c.Machine, c.Accel = "s390-ccw-virtio", "kvm" }, "no vhost-user-vsock-ccw"},
		"relative state":   {func(c *hypervisor.Config) { c.StateDir = "run/x" }, "want an absolute path"},
		"long state dir":   {func(c *hypervisor.Config) { c.StateDir = "/" + strings.Repeat("x", 100) }, "unix socket path limit"},
		"no kernel":        {func(c *hypervisor.Config) { c.Kernel = "" }, "hypervisor.kernel is empty"},
		"launch data size": {func(c *hypervisor.Config) { c.Accel, c.TEE, c.LaunchData = "kvm", tee.Config{Kind: tee.SNP}, seq(48) }, "binds exactly 32"},
		"disk id":          {func(c *hypervisor.Config) { c.Disks = []hypervisor.Disk{{ID: "a b", Path: "/x"}} }, `id "a b"`},
		"disk id long":     {func(c *hypervisor.Config) { c.Disks = []hypervisor.Disk{{ID: strings.Repeat("a", 21), Path: "/x"}} }, "1-20 characters"},
		"disk twice":       {func(c *hypervisor.Config) { c.Disks = []hypervisor.Disk{{ID: "a", Path: "/x"}, {ID: "a", Path: "/y"}} }, `"a" used twice`},
		"disk format":      {func(c *hypervisor.Config) { c.Disks = []hypervisor.Disk{{ID: "a", Path: "/x", Format: "qcow2"}} }, `format "qcow2"`},
		"igvm":             {func(c *hypervisor.Config) { c.IGVM = "/x.igvm" }, "hypervisor.igvm"},
		"driver":           {func(c *hypervisor.Config) { c.Driver = "clh" }, `hypervisor.driver = "clh"`},
		"memory":           {func(c *hypervisor.Config) { c.MemoryMiB = 16 }, "hypervisor.memory_mib = 16"},
		"sev-es policy": {func(c *hypervisor.Config) {
			c.Accel, c.TEE = "kvm", tee.Config{Kind: tee.SEVES, SEV: &tee.SEVOptions{Policy: 1, CBitPos: 51, ReducedPhysBits: 1}}
		}, "tee.sev.policy: 0x1 lacks bit 2"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := baseConfig()
			tc.mod(&cfg)
			_, err := newVM(cfg, fakeHost(false), true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("want errdefs.ErrInvalidArgument, got %v", err)
			}
		})
	}
}

// TestMissingFiles: New names every missing file and the fix; Plan turns
// them into notes and still shows the command.
func TestMissingFiles(t *testing.T) {
	h := fakeHost(false)
	h.stat = func(p string) (os.FileInfo, error) { return nil, os.ErrNotExist }
	h.lookPath = func(name string) (string, error) { return "", errors.New("not in PATH") }
	cfg := baseConfig()
	cfg.Firmware = "/fw/OVMF.fd"
	cfg.Vsock.DaemonPath = "vhost-device-vsock" // empty: the shim serves vsock, nothing to find
	_, err := newVM(cfg, h, true)
	if err == nil {
		t.Fatal("New accepted missing files")
	}
	for _, want := range []string{`QEMU binary "qemu-system-x86_64" not found`, `"vhost-device-vsock" not found`,
		`hypervisor.kernel: guest asset "/opt/coco/share/vmlinux" is missing (run ` + "`make guest-assets`", "hypervisor.initrd", "/fw/OVMF.fd"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	vm, err := newVM(cfg, h, false)
	if err != nil {
		t.Fatal(err)
	}
	args, notes, err := vm.Command()
	if err != nil || len(args) == 0 || args[0] != "qemu-system-x86_64" {
		t.Fatalf("Plan's command = %v, %v", args, err)
	}
	j := strings.Join(notes, "\n")
	for _, want := range []string{"qemu-system-x86_64", "vhost-device-vsock", "vmlinux", "initrd.img", "OVMF.fd"} {
		if !strings.Contains(j, want) {
			t.Errorf("notes do not name %s: %v", want, notes)
		}
	}
	if err := vm.Start(t.Context()); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start of a planned VM: want FailedPrecondition, got %v", err)
	}
}

func TestAccelAutoAndCPU(t *testing.T) {
	cfg := baseConfig()
	cfg.Accel = "auto"
	vm, err := newVM(cfg, fakeHost(false), true)
	if err != nil {
		t.Fatal(err)
	}
	args, notes, _ := vm.Command()
	j := strings.Join(args, " ")
	if !strings.Contains(j, "-accel tcg -cpu max,-erms,-fsrm") || !strings.Contains(strings.Join(notes, " "), `accel "auto"`) {
		t.Errorf("auto without TEE should show tcg/max without the rep-string hints, with a note: %s %v", j, notes)
	}
	if !strings.Contains(j, "mitigations=off init_on_alloc=0") {
		t.Errorf("a TCG guest should boot without speculation mitigations and page zeroing: %s", j)
	}
	cfg.TEE = tee.Config{Kind: tee.SNP}
	vm, err = newVM(cfg, fakeHost(false), true)
	if err != nil {
		t.Fatal(err)
	}
	args, _, _ = vm.Command()
	if j := strings.Join(args, " "); !strings.Contains(j, "-accel kvm -cpu host") || strings.Contains(j, "mitigations=off") || strings.Contains(j, "init_on_alloc") {
		t.Errorf("auto with a TEE must mean kvm/host with the kernel's mitigations: %s", j)
	}
}

func TestCPUModel(t *testing.T) {
	q35, _ := machineFor("q35")
	s390, _ := machineFor("s390-ccw-virtio")
	for _, c := range []struct {
		configured, accel string
		m                 machine
		want              string
	}{
		{"", "tcg", q35, "max,-erms,-fsrm"},
		{"", "tcg", s390, "max"},
		{"", "kvm", q35, "host"},
		{"EPYC-v4", "kvm", q35, "EPYC-v4"},
		{"max", "tcg", q35, "max"},
	} {
		if got := cpuModel(c.configured, c.accel, c.m); got != c.want {
			t.Errorf("cpuModel(%q, %q, %s) = %q, want %q", c.configured, c.accel, c.m.name, got, c.want)
		}
	}
}

func TestVsockModeAuto(t *testing.T) {
	cfg := baseConfig()
	cfg.Vsock.Mode = "auto"
	for has, want := range map[bool]string{true: "vhost-vsock-pci,id=vsock0,guest-cid=3", false: "vhost-user-vsock-pci"} {
		vm, err := newVM(cfg, fakeHost(has), true)
		if err != nil {
			t.Fatal(err)
		}
		args, _, _ := vm.Command()
		j := strings.Join(args, " ")
		if !strings.Contains(j, want) {
			t.Errorf("/dev/vhost-vsock present=%v: want %s in %s", has, want, j)
		}
		if share := strings.Contains(j, "share=on"); share == has {
			t.Errorf("/dev/vhost-vsock present=%v: memfd share=on must be set exactly for vhost-user", has)
		}
	}
}

func TestOptsEscaping(t *testing.T) {
	got := newOpts("file").set("path", "/a,b/c").setBool("x", true).setHex("p", 0x30000).String()
	if want := "file,path=/a,,b/c,x=on,p=0x30000"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTailLines(t *testing.T) {
	p := t.TempDir() + "/log"
	var b strings.Builder
	for i := range 30 {
		b.WriteString("line " + string(rune('a'+i%26)) + "\r\n")
	}
	os.WriteFile(p, []byte(b.String()), 0o644)
	got := strings.Split(tailLines(p, 20), "\n")
	if len(got) != 20 || got[19] != "line d" || strings.Contains(got[0], "\r") {
		t.Errorf("tail = %q", got)
	}
	if s := tailLines(p+".missing", 20); !strings.Contains(s, "no console log") {
		t.Errorf("missing log: %q", s)
	}
}

// TestTDXObjectSchema checks the tdx-guest JSON against QEMU 10.1's
// TdxGuestProperties (reference/specs.md §3), since the installed QEMU
// predates tdx-guest and cannot be asked: only known keys, mrconfigid
// exactly 48 bytes, and a SocketAddress whose vsock cid/port are strings.
func TestTDXObjectSchema(t *testing.T) {
	known := map[string]bool{"qom-type": true, "id": true, "attributes": true, "sept-ve-disable": true,
		"mrconfigid": true, "mrowner": true, "mrownerconfig": true, "quote-generation-socket": true}
	cfg := tableConfigs()["tdx-initdata"]
	vm, err := newVM(cfg, fakeHost(false), true)
	if err != nil {
		t.Fatal(err)
	}
	js, err := vm.plan.tdxObject()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	for k := range m {
		if !known[k] {
			t.Errorf("tdx-guest has no property %q", k)
		}
	}
	b, err := base64.StdEncoding.DecodeString(m["mrconfigid"].(string))
	if err != nil || len(b) != 48 {
		t.Errorf("mrconfigid decodes to %d bytes (%v), QEMU requires 48", len(b), err)
	}
	qgs, ok := m["quote-generation-socket"].(map[string]any)
	if !ok || qgs["type"] != "vsock" {
		t.Fatalf("quote-generation-socket = %v", m["quote-generation-socket"])
	}
	for _, k := range []string{"cid", "port"} {
		if _, ok := qgs[k].(string); !ok {
			t.Errorf("quote-generation-socket.%s must be a JSON string (QAPI VsockSocketAddress), got %T", k, qgs[k])
		}
	}
	if m["sept-ve-disable"] != true {
		t.Error("sept-ve-disable must be set explicitly (its default is not settled upstream)")
	}
}

func TestExitReason(t *testing.T) {
	const sigkill = syscall.WaitStatus(9) // terminated by SIGKILL
	exit := func(c int) syscall.WaitStatus { return syscall.WaitStatus(c << 8) }
	cases := []struct {
		ws       syscall.WaitStatus
		killed   bool
		shutdown string
		panicked bool
		code     int
		want     string
	}{
		{sigkill, false, "", false, 137, "killed by signal 9 (killed)"},
		{sigkill, true, "", false, 137, "killed by signal 9 (killed) at the stop deadline"},
		{exit(0), false, "guest-shutdown", false, 0, "guest powered off"},
		{exit(0), false, "guest-shutdown", true, 0, "guest panicked"},
		{exit(0), false, "guest-panic", false, 0, "guest panicked"},
		{exit(0), false, "guest-reset", false, 0, "guest rebooted or panicked (reset with -no-reboot)"},
		{exit(0), false, "host-qmp-quit", false, 0, "stopped by the host (host-qmp-quit)"},
		{exit(0), false, "host-signal", false, 0, "QEMU received a termination signal"},
		{exit(1), false, "", false, 1, "QEMU exited with code 1: last words"},
		{exit(0), false, "", false, 0, "QEMU exited"},
	}
	for _, c := range cases {
		code, got := exitReason(c.ws, c.killed, c.shutdown, c.panicked, "first\nlast words")
		if code != c.code || got != c.want {
			t.Errorf("exitReason(%v, %v, %q, %v) = %d %q; want %d %q", c.ws, c.killed, c.shutdown, c.panicked, code, got, c.code, c.want)
		}
	}
}

// TestVhostFD: at Start the reserved /dev/vhost-vsock descriptor and CID
// replace the placeholder.
func TestVhostFD(t *testing.T) {
	cfg := baseConfig()
	cfg.Vsock.Mode = "vhost"
	vm, err := newVM(cfg, fakeHost(true), true)
	if err != nil {
		t.Fatal(err)
	}
	vm.plan.cid, vm.plan.vhostFD = 1234, 3
	args, err := vm.plan.argv()
	if err != nil {
		t.Fatal(err)
	}
	if j := strings.Join(args, " "); !strings.Contains(j, "-device vhost-vsock-pci,id=vsock0,guest-cid=1234,vhostfd=3") || strings.Contains(j, "share=on") {
		t.Errorf("vhost argv: %s", j)
	}
}

// Where hot-plugged disks go: a plain q35 VM has one PCIe-to-PCI bridge
// with 31 slots, confidential and microvm VMs have 8 root ports, and
// machines without PCIe none.
func TestHotplugSlots(t *testing.T) {
	tables := tableConfigs()
	for _, tc := range []struct {
		config          string
		slots           int
		firstBus, first string
	}{
		{"coco-dev", hotplugBridgeSlots, hotplugBridge, "0x1"},
		{"snp", rootPortCount, "rp0", ""},
		{"tdx", rootPortCount, "rp0", ""},
		{"microvm", rootPortCount, "rp0", ""},
		{"pef", 0, "", ""},
	} {
		vm, err := newVM(tables[tc.config], fakeHost(true), true)
		if err != nil {
			t.Fatalf("%s: %v", tc.config, err)
		}
		p := vm.plan
		if got := p.hotplugSlots(); got != tc.slots {
			t.Errorf("%s: %d hot-plug slots, want %d", tc.config, got, tc.slots)
		}
		if tc.slots == 0 {
			continue
		}
		if bus, addr := p.hotplugPlace(0); bus != tc.firstBus || addr != tc.first {
			t.Errorf("%s: slot 0 at %s %q, want %s %q", tc.config, bus, addr, tc.firstBus, tc.first)
		}
		args, _, err := vm.Command()
		if err != nil {
			t.Fatal(err)
		}
		j := strings.Join(args, " ")
		if bridge := strings.Contains(j, "pcie-pci-bridge"); bridge != (tc.firstBus == hotplugBridge) {
			t.Errorf("%s: pcie-pci-bridge in argv = %v: %s", tc.config, bridge, j)
		}
	}
	if bus, addr := (&plan{machine: machine{name: "q35", rootPorts: true}}).hotplugPlace(hotplugBridgeSlots - 1); bus != hotplugBridge || addr != "0x1f" {
		t.Errorf("last bridge slot at %s %s, want %s 0x1f", bus, addr, hotplugBridge)
	}
}

// A full VM says so before it touches QEMU, naming the disk and the count.
func TestHotplugSlotsExhausted(t *testing.T) {
	vm, err := newVM(baseConfig(), fakeHost(true), true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range hotplugBridgeSlots {
		vm.disks[fmt.Sprintf("c%d", i)] = i
	}
	err = vm.AddDisk(context.Background(), hypervisor.Disk{ID: "one-more", Path: "/run/x.img", ReadOnly: true})
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), `disk "one-more": all 31 hot-plug slots are in use`) {
		t.Fatalf("err = %v, want resource exhausted naming the disk and the 31 slots", err)
	}
	delete(vm.disks, "c7")
	if slot, err := vm.freeSlot("again"); err != nil || slot != 7 {
		t.Fatalf("freeSlot = %d, %v; want the freed slot 7", slot, err)
	}
}

// Under TCG a multi-vCPU guest boots on one vCPU with its LOCK prefixes
// kept (the agent onlines the rest); not with one vCPU, not under KVM.
func TestLateVCPUs(t *testing.T) {
	for _, c := range []struct {
		accel string
		vcpus uint32
		want  bool
	}{{"tcg", 2, true}, {"tcg", 1, false}, {"kvm", 2, false}} {
		cfg := baseConfig()
		cfg.Accel, cfg.VCPUs = c.accel, c.vcpus
		vm, err := newVM(cfg, fakeHost(c.accel == "kvm"), true)
		if err != nil {
			t.Fatal(err)
		}
		args, _, _ := vm.Command()
		j := strings.Join(args, " ")
		if got := strings.Contains(j, "maxcpus=1 noreplace-smp"); got != c.want {
			t.Errorf("%s, %d vCPUs: maxcpus=1 noreplace-smp in the command line = %v, want %v: %s", c.accel, c.vcpus, got, c.want, j)
		}
	}
}
