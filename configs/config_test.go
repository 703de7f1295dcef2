package configs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// noEnv is a getenv that sees an empty environment.
func noEnv(string) string { return "" }

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes a class file into a fresh temp dir and returns its path.
func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestShippedFilesLoadAndYieldVM(t *testing.T) {
	want := map[string]struct {
		kind    tee.Kind
		driver  string
		machine string
		accel   string
	}{
		"configuration-qemu-coco-dev.toml": {tee.None, "qemu", "q35", "auto"},
		"configuration-qemu-sev.toml":      {tee.SEV, "qemu", "q35", "kvm"},
		"configuration-qemu-snp.toml":      {tee.SNP, "qemu", "q35", "kvm"},
		"configuration-qemu-tdx.toml":      {tee.TDX, "qemu", "q35", "kvm"},
		"configuration-qemu-se.toml":       {tee.SE, "qemu", "s390-ccw-virtio", "kvm"},
		"configuration-qemu-pef.toml":      {tee.PEF, "qemu", "pseries", "kvm"},
		"configuration-clh-snp.toml":       {tee.SNP, "clh", "", "kvm"},
		"configuration-clh-tdx.toml":       {tee.TDX, "clh", "", "kvm"},
	}
	names := Names()
	if len(names) != len(want) {
		t.Fatalf("Names() = %v, want the %d classes of the test table", names, len(want))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("shipped file %s has no expectation in this test", name)
			}
			c, err := loadEmbedded(name, envOf(map[string]string{EnvShareDir: "/srv/share"}))
			if err != nil {
				t.Fatal(err)
			}
			if c.Name != strings.TrimSuffix(strings.TrimPrefix(name, "configuration-"), ".toml") {
				t.Errorf("Name = %q", c.Name)
			}
			vm, err := c.VM("pod-1", "/run/coco/pod-1")
			if err != nil {
				t.Fatal(err)
			}
			if vm.TEE.Kind != w.kind || vm.Driver != w.driver || vm.Machine != w.machine || vm.Accel != w.accel {
				t.Errorf("got kind=%s driver=%s machine=%q accel=%s, want %+v", vm.TEE.Kind, vm.Driver, vm.Machine, vm.Accel, w)
			}
			if vm.ID != "pod-1" || vm.StateDir != "/run/coco/pod-1" {
				t.Errorf("ID/StateDir = %q %q", vm.ID, vm.StateDir)
			}
			if !strings.HasPrefix(vm.Kernel, "/srv/share/") {
				t.Errorf("kernel %q not resolved against COCO_SHARE_DIR", vm.Kernel)
			}
			if vm.VCPUs == 0 || vm.MemoryMiB == 0 || vm.BootTimeout <= 0 || vm.Path == "" || vm.ConsoleLogMax != 4<<20 {
				t.Errorf("unresolved sizes or paths: %+v", vm)
			}
			// Exactly the options struct matching the kind is set.
			set := map[tee.Kind]bool{tee.SEV: vm.TEE.SEV != nil, tee.SNP: vm.TEE.SNP != nil,
				tee.TDX: vm.TEE.TDX != nil, tee.SE: vm.TEE.SE != nil, tee.PEF: vm.TEE.PEF != nil}
			for k, isSet := range set {
				if isSet != (k == w.kind || (k == tee.SEV && w.kind == tee.SEVES)) {
					t.Errorf("options for %s set=%v with kind %s", k, isSet, w.kind)
				}
			}
			if w.kind == tee.SNP && vm.TEE.SNP.Policy != 0x30000 {
				t.Errorf("SNP policy %#x, want 0x30000", vm.TEE.SNP.Policy)
			}
		})
	}
}

// A class file is an overlay: it must not restate hypervisor, agent,
// runtime or rootfs defaults (tee keys may, to pin what is measured).
func TestShippedFilesAreSmallOverlays(t *testing.T) {
	var def map[string]any
	b, _ := Embedded(defaultsFile)
	if _, err := toml.Decode(string(b), &def); err != nil {
		t.Fatal(err)
	}
	for _, name := range Names() {
		b, err := Embedded(name)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if _, err := toml.Decode(string(b), &m); err != nil {
			t.Fatal(err)
		}
		for table, v := range m {
			if table == "tee" {
				continue
			}
			for k, val := range v.(map[string]any) {
				if reflect.DeepEqual(def[table].(map[string]any)[k], val) {
					t.Errorf("%s restates the default %s.%s = %v", name, table, k, val)
				}
			}
		}
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	h := c.Hypervisor
	if c.Name != "qemu-coco-dev" || c.Path != "" {
		t.Errorf("Name/Path = %q/%q", c.Name, c.Path)
	}
	if h.Driver != "qemu" || h.Machine != "q35" || h.Accel != "auto" || h.VCPUs != 2 || h.MemoryMiB != 512 ||
		h.Vsock.Mode != "auto" || c.TEE.Kind != "none" {
		t.Errorf("unexpected defaults: %+v tee=%q", h, c.TEE.Kind)
	}
	if os.Getenv(EnvShareDir) == "" && h.Kernel != "/opt/coco/share/vmlinux" {
		t.Errorf("kernel = %q, want /opt/coco/share/vmlinux", h.Kernel)
	}
	if h.BootTimeout.D() != 30*time.Second {
		t.Errorf("boot timeout %v", h.BootTimeout)
	}
	if c.Rootfs.Mkfs != "mkfs.erofs" {
		t.Errorf("rootfs defaults: %+v", c.Rootfs)
	}
	for _, a := range []string{"io.katacontainers.config.hypervisor.cc_init_data", "io.katacontainers.config.agent.policy"} {
		if !c.AnnotationAllowed(a) {
			t.Errorf("default does not allow %s", a)
		}
	}
	if c.AnnotationAllowed("io.katacontainers.config.hypervisor.kernel") {
		t.Error("default allows an annotation it does not list")
	}
}

func TestOverlayKeepsOtherDefaults(t *testing.T) {
	p := writeFile(t, "configuration-mine.toml", "[hypervisor]\nvcpus = 2\n[runtime]\nannotations_allowed = [\"io.example/*\"]\n")
	c, err := load(p, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hypervisor.VCPUs != 2 || c.Hypervisor.MemoryMiB != 512 || c.Hypervisor.Machine != "q35" {
		t.Errorf("overlay result %+v", c.Hypervisor)
	}
	if c.Name != "mine" || c.Path != p {
		t.Errorf("Name/Path = %q/%q", c.Name, c.Path)
	}
	// A list in the overlay replaces the default list.
	if got := c.Runtime.AnnotationsAllowed; len(got) != 1 || got[0] != "io.example/*" {
		t.Errorf("annotations_allowed = %v", got)
	}
	if !c.AnnotationAllowed("io.example/x") || c.AnnotationAllowed("io.katacontainers.config.agent.policy") {
		t.Error("glob matching wrong")
	}
}

func TestUnknownKeys(t *testing.T) {
	cases := []struct {
		body, key, allowed string
	}{
		{"[hypervisor]\nvcpu = 2\n", `hypervisor.vcpu`, "[hypervisor] allows: driver, path, machine"},
		{"[hypervisor.vsock]\nport = 1\n", `hypervisor.vsock.port`, "[hypervisor.vsock] allows: mode, daemon_path"},
		{"[tee.se]\nfoo = 1\n", `tee.se`, "[tee] allows: kind, sev, snp, tdx"},
		{"shim = 1\n", `shim`, "the top level allows: hypervisor, tee, agent, runtime, rootfs"},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			p := writeFile(t, "c.toml", tc.body)
			_, err := load(p, noEnv)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, want := range []string{p, tc.key, "unknown key", tc.allowed} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if strings.Count(msg, "unknown key") != 1 {
				t.Errorf("want one error for a whole unknown table, got %q", msg)
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("not ErrInvalidArgument: %v", err)
			}
		})
	}
}

func TestKeysAreCaseSensitive(t *testing.T) {
	p := writeFile(t, "c.toml", "[hypervisor]\nVCPUS = 2\n")
	_, err := load(p, noEnv)
	if err == nil || !strings.Contains(err.Error(), "hypervisor.VCPUS") || !strings.Contains(err.Error(), `write "vcpus"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestWrongTypes(t *testing.T) {
	cases := map[string]string{
		"hypervisor.vcpus":        "[hypervisor]\nvcpus = \"two\"\n",
		"hypervisor.memory_mib":   "[hypervisor]\nmemory_mib = -1\n",
		"tee.snp.kernel_hashes":   "[tee.snp]\nkernel_hashes = \"yes\"\n",
		"hypervisor.boot_timeout": "[hypervisor]\nboot_timeout = 30\n",
		"runtime.initdata":        "[runtime]\ninitdata = [\"/run\"]\n",
	}
	for key, body := range cases {
		t.Run(key, func(t *testing.T) {
			p := writeFile(t, "c.toml", body)
			_, err := load(p, noEnv)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), key) {
				t.Errorf("error %q does not name file and key %s", err, key)
			}
		})
	}
}

func TestSyntaxErrorNamesFile(t *testing.T) {
	p := writeFile(t, "c.toml", "[hypervisor\n")
	_, err := load(p, noEnv)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v", err)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := load(filepath.Join(t.TempDir(), "nope.toml"), noEnv)
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "ConfigPath") {
		t.Fatalf("err = %v", err)
	}
}

func TestSelectPrecedence(t *testing.T) {
	opt := writeFile(t, "configuration-opt.toml", "[hypervisor]\nvcpus = 3\n")
	env := writeFile(t, "configuration-env.toml", "[hypervisor]\nvcpus = 4\n")

	c, err := selectConfig(opt, envOf(map[string]string{EnvConfig: env}))
	if err != nil || c.Hypervisor.VCPUs != 3 || c.Path != opt {
		t.Fatalf("ConfigPath must win over $COCO_CONFIG: %v %+v", err, c)
	}
	c, err = selectConfig("", envOf(map[string]string{EnvConfig: env}))
	if err != nil || c.Hypervisor.VCPUs != 4 || c.Path != env {
		t.Fatalf("$COCO_CONFIG must win over the default: %v %+v", err, c)
	}
	c, err = selectConfig("", noEnv)
	if err != nil || c.Name != "qemu-coco-dev" || c.Path != "" {
		t.Fatalf("default expected: %v %+v", err, c)
	}
	// The exported form reads the real environment.
	t.Setenv(EnvConfig, env)
	if c, err := Select(""); err != nil || c.Path != env {
		t.Fatalf("Select with $COCO_CONFIG: %v %+v", err, c)
	}
	t.Setenv(EnvConfig, filepath.Join(t.TempDir(), "missing.toml"))
	if _, err := Select(""); !errdefs.IsNotFound(err) {
		t.Fatalf("a missing $COCO_CONFIG file must be an error, not a silent default: %v", err)
	}
}

func TestShareDir(t *testing.T) {
	p := writeFile(t, "c.toml", "[hypervisor]\nshare_dir = \"/srv/coco\"\nfirmware = \"/abs/OVMF.fd\"\n[agent]\npolicy = \"policy/allow.rego\"\n")
	c, err := load(p, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Hypervisor.Kernel != "/srv/coco/vmlinux" || c.Hypervisor.Initrd != "/srv/coco/initrd.img" ||
		c.Hypervisor.Firmware != "/abs/OVMF.fd" || c.Agent.Policy != "/srv/coco/policy/allow.rego" {
		t.Errorf("paths: %+v %+v", c.Hypervisor, c.Agent)
	}
	// $COCO_SHARE_DIR wins over the key and is made absolute.
	c, err = load(p, envOf(map[string]string{EnvShareDir: "build/guest"}))
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Join(wd, "build/guest/vmlinux"); c.Hypervisor.Kernel != want {
		t.Errorf("kernel = %q, want %q", c.Hypervisor.Kernel, want)
	}
}

func TestCheckAssets(t *testing.T) {
	dir := t.TempDir()
	c, err := loadEmbedded(DefaultName, envOf(map[string]string{EnvShareDir: dir}))
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckAssets()
	if !errdefs.IsNotFound(err) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
	for _, want := range []string{filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd-dev.img"), filepath.Join(dir, "tools.erofs"), "make guest-assets", "make install", "hypervisor.kernel", "hypervisor.tools_image"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	for _, f := range []string{"vmlinux", "initrd-dev.img", "tools.erofs"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CheckAssets(); err != nil {
		t.Fatalf("assets present, still: %v", err)
	}
	// A directory where a file belongs is reported too.
	if err := os.Remove(filepath.Join(dir, "initrd-dev.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "initrd-dev.img"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckAssets(); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v", err)
	}
}

func TestVMResolution(t *testing.T) {
	c := Default()
	vm, err := c.VM("abc", "/tmp/state")
	if err != nil {
		t.Fatal(err)
	}
	if vm.StateDir != "/tmp/state" || vm.Accel != "auto" || vm.Vsock.Mode != "auto" || vm.TEE.Kind != tee.None {
		t.Errorf("%+v", vm)
	}
	for _, id := range []string{"", "a/b", "..", "."} {
		if _, err := c.VM(id, "/tmp/state"); !errdefs.IsInvalidArgument(err) {
			t.Errorf("VM(%q) err = %v", id, err)
		}
	}
	for _, dir := range []string{"relative/dir", ""} {
		if _, err := c.VM("abc", dir); !errdefs.IsInvalidArgument(err) {
			t.Errorf("state dir %q: %v", dir, err)
		}
	}
	// A hand-built config with a bad kind is refused, naming the key.
	c.TEE.Kind = "sgx"
	if _, err := c.VM("abc", "/tmp/state"); err == nil || !strings.Contains(err.Error(), "tee.kind") {
		t.Errorf("err = %v", err)
	}
}

func TestEmbedded(t *testing.T) {
	if _, err := Embedded("configuration-qemu-snp.toml"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"nope.toml", "../config.go", "config.go"} {
		if _, err := Embedded(bad); !errdefs.IsNotFound(err) {
			t.Errorf("Embedded(%q) err = %v", bad, err)
		}
	}
	if _, err := LoadEmbedded(defaultsFile); err == nil {
		t.Error("defaults.toml is not a class")
	}
}

func TestErrorUnwrap(t *testing.T) {
	var e error = &Error{File: "f", Key: "k", Msg: "m"}
	if e.Error() != "f: k: m" || !errors.Is(e, errdefs.ErrInvalidArgument) {
		t.Fatal(e)
	}
}

func TestLoadClassByNameOrFile(t *testing.T) {
	for _, name := range []string{"qemu-snp", "configuration-qemu-snp.toml"} {
		c, err := LoadClass(name)
		if err != nil {
			t.Fatalf("LoadClass(%q): %v", name, err)
		}
		if c.Name != "qemu-snp" || c.TEE.Kind != "snp" {
			t.Errorf("LoadClass(%q) = class %q, tee %q", name, c.Name, c.TEE.Kind)
		}
	}
	if _, err := LoadClass("qemu-nope"); err == nil || !strings.Contains(err.Error(), "qemu-nope") {
		t.Errorf("unknown class: %v, want an error naming it", err)
	}
	names := ClassNames()
	if len(names) != len(Names()) || !slices.Contains(names, "qemu-coco-dev") {
		t.Errorf("ClassNames = %v", names)
	}
}
