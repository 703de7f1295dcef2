package kvmprobe

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func qemu(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath(DefaultQEMU)
	if err != nil {
		t.Skipf("%s not installed (scripts/install-deps.sh); would boot the probe guest", DefaultQEMU)
	}
	return p
}

// The probe itself is right: under TCG, which always works, the guest
// reaches long mode and exits with the expected status.
func TestProbeTCG(t *testing.T) {
	q := qemu(t)
	// The image lives in a memfd: nothing may appear in the temp dir.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if err := ProbeAccel(context.Background(), q, "tcg"); err != nil {
		t.Fatalf("TCG probe failed: %v", err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("probe left files behind: %v", ents)
	}
}

// Probe answers within its deadline whatever this host's KVM does, and a
// negative answer is ErrUnavailable with a reason. The verdict is logged:
// on the development machines (PVM-backed /dev/kvm) it is "not usable".
func TestProbeKVMNeverHangs(t *testing.T) {
	q := qemu(t)
	start := time.Now()
	err := Probe(context.Background(), q)
	took := time.Since(start)
	t.Logf("KVM probe on this host: err=%v after %s", err, took)
	if took > DefaultTimeout+2*time.Second {
		t.Errorf("probe took %s, more than its %s deadline", took, DefaultTimeout)
	}
	if err != nil && !errdefs.IsUnavailable(err) {
		t.Errorf("want ErrUnavailable, got %v", err)
	}
}

// A guest that never exits is killed at the deadline and its QEMU is gone.
func TestHangingGuestIsKilled(t *testing.T) {
	q := qemu(t)
	hang := image([]byte{0xf4, 0xeb, 0xfd}) // hlt; jmp back
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	pid, err := boot(ctx, q, "tcg", hang)
	if err == nil || !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "did not finish within") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("took %s to give up on a 1.5s deadline", took)
	}
	if pid == 0 {
		t.Fatal("no pid")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("QEMU pid %d still exists after the probe: %v", pid, err)
	}
}

// A guest that exits with another status is a failure, not a success.
func TestWrongExitStatus(t *testing.T) {
	q := qemu(t)
	// mov al, 0x11; out 0xf4, al (exit status 35) in real mode.
	pid, err := boot(context.Background(), q, "tcg", image([]byte{0xb0, 0x11, 0xe6, 0xf4, 0xf4}))
	if err == nil || !strings.Contains(err.Error(), "exit status 35") {
		t.Fatalf("pid %d err = %v", pid, err)
	}
}

func TestBadInputs(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-qemu")
	err := ProbeAccel(context.Background(), missing, "tcg")
	if err == nil || !strings.Contains(err.Error(), missing) || !errdefs.IsUnavailable(err) {
		t.Errorf("missing binary: %v", err)
	}
	if err := ProbeAccel(context.Background(), "", "hvf"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad accel: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := exec.LookPath(DefaultQEMU); err == nil {
		if err := ProbeAccel(ctx, "", "tcg"); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled ctx: %v", err)
		}
	}
}

// The hex in probeCode is what testdata/probe.S assembles to.
func TestImageMatchesSource(t *testing.T) {
	for _, tool := range []string{"gcc", "ld", "objcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed; would rebuild testdata/probe.S and compare with probeCode", tool)
		}
	}
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	obj, elf, bin := filepath.Join(dir, "p.o"), filepath.Join(dir, "p.elf"), filepath.Join(dir, "p.bin")
	run("gcc", "-c", "-o", obj, "testdata/probe.S")
	run("ld", "-m", "elf_x86_64", "-Ttext=0xF0000", "-e", "_start", "-o", elf, obj)
	run("objcopy", "-O", "binary", "-j", ".text", elf, bin)
	got, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img := probeImage()
	if !bytes.Equal(img[:len(got)], got) || len(img) != imageSize {
		t.Fatalf("probeCode differs from testdata/probe.S:\n got %x\nwant %x", img[:len(got)], got)
	}
	if !bytes.Equal(img[imageSize-16:imageSize-11], []byte{0xea, 0, 0, 0, 0xf0}) {
		t.Fatalf("reset vector: %x", img[imageSize-16:])
	}
}
