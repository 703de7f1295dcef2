//go:build integration

package qemu

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/guest-assets/initrd"
	"github.com/coco-runtime/coco/guest-assets/kmod"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/kvmprobe"
)

// guestDir holds `make kernel` output: vmlinux, modules.manifest and, for
// Debian's kernel, modules/.
func guestDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("COCO_GUEST_DIR")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "build", "guest")
	}
	for _, f := range []string{"vmlinux", "modules.manifest"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Skipf("guest kernel not built (%v): run `make kernel`; this test would boot it under QEMU and reach vsock port 1024", err)
		}
	}
	return dir
}

// testInitrd builds the boot tests' initrd: testinit as /init, the guest's
// modules and their manifest at kmod.DefaultManifest.
func testInitrd(t testing.TB, guest string) string {
	t.Helper()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "init")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./testdata/testinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build testinit: %v\n%s", err, out)
	}
	initBytes, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile(filepath.Join(guest, "modules.manifest"))
	if err != nil {
		t.Fatal(err)
	}
	entries := []initrd.Entry{
		{Path: "/init", Mode: 0o755, Data: initBytes},
		{Path: kmod.DefaultManifest, Mode: 0o644, Data: manifest},
		{Path: "/dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
	}
	// A kernel with everything built in (ours, the default) has an empty
	// manifest and no modules directory.
	mods := filepath.Join(guest, "modules")
	err = filepath.WalkDir(mods, func(p string, d fs.DirEntry, err error) error {
		if p == mods && errors.Is(err, fs.ErrNotExist) {
			return fs.SkipAll
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mods, p)
		entries = append(entries, initrd.Entry{Path: "/lib/modules/" + rel, Mode: 0o644, Data: b})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(tmp, "initrd.img")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := initrd.Write(f, entries, initrd.None); err != nil {
		t.Fatal(err)
	}
	return out
}

type bootEnv struct {
	kernel, initrd string
}

// vsockBackends are the two servers of a vhost-user vsock device: the shim
// itself (package vhostuser) and a per-VM vhost-device-vsock.
var vsockBackends = []struct{ name, daemon string }{{"shim", ""}, {"vhost-device-vsock", DefaultDaemon}}

// forEachBackend runs f once per vsock back-end, with cfg's daemon path
// set; the daemon's run is skipped where it is not installed.
func forEachBackend(t *testing.T, f func(t *testing.T, daemon string)) {
	for _, b := range vsockBackends {
		t.Run(b.name, func(t *testing.T) {
			if b.daemon != "" {
				if _, err := exec.LookPath(b.daemon); err != nil {
					t.Skipf("%s not installed (scripts/install-deps.sh); would run the same checks against it", b.daemon)
				}
			}
			f(t, b.daemon)
		})
	}
}

func setupBoot(t testing.TB) bootEnv {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed: scripts/install-deps.sh")
	}
	g := guestDir(t)
	return bootEnv{kernel: filepath.Join(g, "vmlinux"), initrd: testInitrd(t, g)}
}

func (e bootEnv) config(t *testing.T, params string) hypervisor.Config {
	// Short state dir: unix socket paths are limited to 107 bytes.
	state, err := os.MkdirTemp("", "qv")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(state) // the driver creates it and must remove it
	return hypervisor.Config{
		ID: filepath.Base(state), StateDir: state, Machine: "q35", Accel: "tcg",
		VCPUs: 1, MemoryMiB: 512, Kernel: e.kernel, Initrd: e.initrd,
		KernelParams: "quiet " + params, Vsock: hypervisor.Vsock{Mode: "vhost-user"},
		BootTimeout: 60 * time.Second,
	}
}

// leftovers lists what a VM could leave behind: its processes (by PID and
// by state dir on their command lines) and its state dir.
func assertNothingLeft(t *testing.T, cfg hypervisor.Config, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if pid > 0 && syscall.Kill(pid, 0) == nil {
			if b, _ := os.ReadFile(filepath.Join("/proc", itoa(pid), "stat")); !strings.Contains(string(b), ") Z") {
				t.Errorf("process %d still alive", pid)
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), cfg.StateDir) {
			t.Errorf("process %s still references %s: %q", filepath.Dir(p), cfg.StateDir, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	if _, err := os.Stat(cfg.StateDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state dir %s still exists (%v)", cfg.StateDir, err)
	}
	// Unix sockets still bound or connected under the state dir, by anyone.
	if b, err := os.ReadFile("/proc/net/unix"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, cfg.StateDir) {
				t.Errorf("unix socket left: %s", l)
			}
		}
	}
}

// openFDs counts this process's open descriptors: a VM's lifecycle must not
// leak any into the long-lived shim.
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func itoa(i int) string { return strconv.Itoa(i) }

// daemonPID finds the vhost-device-vsock serving cfg's VM.
func daemonPID(cfg hypervisor.Config) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		s := string(b)
		if strings.Contains(s, DefaultDaemon) && strings.Contains(s, cfg.StateDir) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}

// TestBootVsock boots the real kernel under TCG with vhost-user vsock,
// reaches the guest's port 1024, stops, and checks nothing is left. It
// boots a few times and logs the median time from Start to the first
// answer on vsock (a measurement, not an assertion).
func TestBootVsock(t *testing.T) {
	env := setupBoot(t)
	forEachBackend(t, func(t *testing.T, daemon string) { bootVsock(t, env, daemon) })
}

func bootVsock(t *testing.T, env bootEnv, daemon string) {
	var times []time.Duration
	fdsBefore := openFDs(t)
	for i := range 3 {
		cfg := env.config(t, "")
		cfg.Vsock.DaemonPath = daemon
		vm, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		start := time.Now()
		if err := vm.Start(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
		if err := vm.Start(ctx); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("second Start: want FailedPrecondition, got %v", err)
		}
		qemuPID := vm.Info().PID
		dPID := daemonPID(cfg)
		if daemon != "" && dPID == 0 {
			t.Error("no vhost-device-vsock process for the VM")
		}
		if daemon == "" && dPID != 0 {
			t.Errorf("vhost-device-vsock (pid %d) runs although the shim serves the device", dPID)
		}
		c, err := vm.Dial(ctx, 1024)
		if err != nil {
			vm.Stop(ctx)
			cancel()
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		hello, err := r.ReadString('\n')
		elapsed := time.Since(start)
		if err != nil || !strings.HasPrefix(hello, "hello from guest 6.") {
			t.Errorf("guest greeting = %q, %v", hello, err)
		}
		if _, err := c.Write([]byte("ping " + itoa(i) + "\n")); err != nil {
			t.Error(err)
		}
		if echo, err := r.ReadString('\n'); err != nil || echo != "ping "+itoa(i)+"\n" {
			t.Errorf("echo = %q, %v", echo, err)
		}
		c.Close()
		times = append(times, elapsed)
		if i == 1 {
			// The second boot ends through Quit (what the sandbox does after
			// DestroySandbox): QEMU is gone on return, Stop still tidies up.
			if err := vm.Quit(ctx); err != nil {
				t.Errorf("quit: %v", err)
			}
			if syscall.Kill(qemuPID, 0) == nil {
				t.Errorf("QEMU pid %d still alive after Quit returned", qemuPID)
			}
		}
		if err := vm.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		st, err := vm.Wait(ctx)
		if err != nil || st.Reason == "" {
			t.Errorf("wait after stop = %+v, %v", st, err)
		}
		t.Logf("boot %d: vsock answer after %s; exit: %s", i, elapsed.Round(time.Millisecond), st.Reason)
		if err := vm.Stop(ctx); err != nil {
			t.Errorf("second Stop should be a no-op: %v", err)
		}
		if _, err := vm.Dial(ctx, 1024); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("Dial after Stop: want FailedPrecondition, got %v", err)
		}
		cancel()
		assertNothingLeft(t, cfg, qemuPID, dPID)
	}
	if after := openFDs(t); after > fdsBefore {
		t.Errorf("open descriptors grew from %d to %d over 3 VM lifecycles", fdsBefore, after)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("Start → vsock answer under TCG: median %s of %v", times[len(times)/2].Round(time.Millisecond), times)
}

// TestDiskHotplug: a disk attached at boot and one hot-plugged onto a PCIe
// root port are both seen by the guest under their serials, read-only where
// asked; the hot-plugged one goes away again on RemoveDisk.
func TestDiskHotplug(t *testing.T) {
	env := setupBoot(t)
	cfg := env.config(t, "")
	cfg.KernelParams = ""
	dir := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg.Disks = []hypervisor.Disk{{ID: "initdata", Path: mk("initdata.img"), ReadOnly: true}}
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer vm.Stop(ctx)
	c, err := vm.Dial(ctx, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	ask := func() string {
		if _, err := c.Write([]byte("disks\n")); err != nil {
			t.Fatal(err)
		}
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(l)
	}
	waitFor := func(want string) {
		t.Helper()
		var got string
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			if got = ask(); got == want {
				return
			}
		}
		t.Fatalf("guest disks = %q, want %q; console:\n%s", got, want, tailLines(vm.Info().ConsoleLog, 40))
	}
	waitFor("initdata:1")

	hot := hypervisor.Disk{ID: "rootfs-c1", Path: mk("rootfs.img"), ReadOnly: true}
	if err := vm.AddDisk(ctx, hot); err != nil {
		t.Fatal(err)
	}
	if err := vm.AddDisk(ctx, hot); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second AddDisk: want AlreadyExists, got %v", err)
	}
	rw := hypervisor.Disk{ID: "scratch", Path: mk("scratch.img")}
	if err := vm.AddDisk(ctx, rw); err != nil {
		t.Fatal(err)
	}
	waitFor("initdata:1 rootfs-c1:1 scratch:0")

	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	if err := vm.RemoveDisk(rctx, hot.ID); err != nil {
		t.Fatal(err)
	}
	waitFor("initdata:1 scratch:0")
	if err := vm.RemoveDisk(ctx, hot.ID); !errdefs.IsNotFound(err) {
		t.Errorf("RemoveDisk of a removed disk: want NotFound, got %v", err)
	}
	if err := vm.RemoveDisk(ctx, "initdata"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("RemoveDisk of a boot disk: want FailedPrecondition, got %v", err)
	}
	// The freed root port is reused.
	if err := vm.AddDisk(ctx, hot); err != nil {
		t.Fatal(err)
	}
	waitFor("initdata:1 rootfs-c1:1 scratch:0")
	c.Close()
	if err := vm.Stop(ctx); err != nil {
		t.Error(err)
	}
	assertNothingLeft(t, cfg)
}

// TestAccelAuto: accel "auto" settles on what the KVM probe says (TCG on
// hosts whose /dev/kvm is missing or hangs guests) and the guest still
// comes up.
func TestAccelAuto(t *testing.T) {
	env := setupBoot(t)
	cfg := env.config(t, "")
	cfg.Accel = "auto"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	want := "tcg"
	if kvmprobe.Probe(ctx, "qemu-system-x86_64") == nil {
		want = "kvm"
	}
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer vm.Stop(ctx)
	if got := vm.Info().Accel; got != want {
		t.Errorf("accel auto resolved to %q, the probe says %q", got, want)
	}
	c, err := vm.Dial(ctx, 1024)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := vm.Stop(ctx); err != nil {
		t.Error(err)
	}
	assertNothingLeft(t, cfg)
}

// BenchmarkBootToVsock measures Start → first answer from the guest on
// vsock 1024 (TCG, q35, vmlinux by PVH, vhost-user vsock), then Stop.
// Run: go test -tags integration -run '^$' -bench BootToVsock -benchtime 5x ./hypervisor/qemu/
func BenchmarkBootToVsock(b *testing.B) {
	env := setupBoot(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		state, _ := os.MkdirTemp("", "qb")
		os.Remove(state)
		cfg := hypervisor.Config{ID: filepath.Base(state), StateDir: state, Machine: "q35", Accel: "tcg", VCPUs: 1, MemoryMiB: 512,
			Kernel: env.kernel, Initrd: env.initrd, KernelParams: "quiet", Vsock: hypervisor.Vsock{Mode: "vhost-user"},
			BootTimeout: time.Minute}
		vm, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		b.StartTimer()
		if err := vm.Start(ctx); err != nil {
			b.Fatal(err)
		}
		c, err := vm.Dial(ctx, 1024)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		c.Close()
		vm.Stop(ctx)
		cancel()
	}
}
