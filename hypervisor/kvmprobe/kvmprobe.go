// Package kvmprobe decides whether KVM really works by booting a tiny guest
// under it, not by opening /dev/kvm.
//
// Some hosts expose a /dev/kvm that opens, creates VMs and runs real-mode
// code, yet hangs every ordinary guest (a PVM-backed /dev/kvm does this at
// the switch to protected mode). The probe guest walks the path a Linux
// guest takes — real mode, protected mode, long mode with paging — and then
// asks QEMU to exit through isa-debug-exit. Success is that exit status
// within a short deadline; anything else is "KVM not usable".
//
// Nothing is cached: a caller that probes often keeps the answer.
package kvmprobe

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// DefaultTimeout bounds a probe when ctx has no earlier deadline. The guest
// finishes in well under a second even under TCG on a loaded host.
const DefaultTimeout = 5 * time.Second

// DefaultQEMU is used when qemuPath is empty.
const DefaultQEMU = "qemu-system-x86_64"

const (
	imageSize   = 64 << 10 // QEMU wants a PC BIOS image in 64 KiB units
	exitPort    = "0xf4"
	successCode = 0x21<<1 | 1 // isa-debug-exit turns a write of v into exit status v<<1|1
	stderrLimit = 4 << 10
)

// probeCode is testdata/probe.S assembled for load address 0xF0000
// (TestImageMatchesSource rebuilds it when an assembler is present).
const probeCode = "fa2e660f0116a8000f20c06683c8010f22c066ea1a000f00080066b810008ed88ec08ed0" +
	"bf0010000031c0b9000c0000f3abc7050010000003200000c7050020000003300000c70500" +
	"30000083000000b8001000000f22d80f20e083c8200f22e0b9800000c00f320d000100000f" +
	"300f20c00d000000800f22c0ea81000f001800b021e6f4f4ebfd0000000000000000ffff00" +
	"00009acf00ffff00000092cf00ffff0000009aaf001f0088000f00"

// resetVector is "ljmp $0xf000, $0x0000": from the reset vector at 0xFFFF0
// to the start of the image at 0xF0000.
const resetVector = "\xea\x00\x00\x00\xf0"

// image returns the 64 KiB firmware image that runs code from the reset
// vector.
func image(code []byte) []byte {
	img := make([]byte, imageSize)
	copy(img, code)
	copy(img[imageSize-16:], resetVector)
	return img
}

func probeImage() []byte {
	code, err := hex.DecodeString(probeCode)
	if err != nil {
		panic(err) // a constant
	}
	return image(code)
}

// Probe reports whether QEMU can run a guest under KVM on this host: nil
// when it can, an errdefs.ErrUnavailable error saying why not otherwise. It
// never takes longer than DefaultTimeout (or ctx's earlier deadline) and
// leaves no process or file behind.
func Probe(ctx context.Context, qemuPath string) error {
	return ProbeAccel(ctx, qemuPath, "kvm")
}

// ProbeAccel boots the probe guest with the given QEMU accelerator ("kvm" or
// "tcg"). With "tcg" it checks the probe and QEMU themselves.
func ProbeAccel(ctx context.Context, qemuPath, accel string) error {
	if accel != "kvm" && accel != "tcg" {
		return fmt.Errorf("kvmprobe: accel %q: %w: want \"kvm\" or \"tcg\"", accel, errdefs.ErrInvalidArgument)
	}
	if accel == "kvm" {
		if _, err := os.Stat("/dev/kvm"); err != nil {
			return fmt.Errorf("kvmprobe: KVM not usable: %v (load kvm_intel or kvm_amd, or enable nested virtualization): %w", err, errdefs.ErrUnavailable)
		}
	}
	_, err := boot(ctx, qemuPath, accel, probeImage())
	return err
}

// boot runs QEMU on img and returns the QEMU pid (for tests that check it
// is gone) and the verdict.
func boot(ctx context.Context, qemuPath, accel string, img []byte) (int, error) {
	if qemuPath == "" {
		qemuPath = DefaultQEMU
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	budget := time.Until(deadline).Round(time.Millisecond)

	// The image lives in an anonymous memfd handed to QEMU as fd 3, so no
	// temporary file exists at any point.
	fw, err := memfile("coco-kvmprobe", img)
	if err != nil {
		return 0, fmt.Errorf("kvmprobe: %w", err)
	}
	defer fw.Close()

	cmd := exec.CommandContext(ctx, qemuPath,
		"-no-user-config", "-nodefaults", "-display", "none",
		"-machine", "pc", "-accel", accel, "-smp", "1", "-m", "16M",
		"-bios", "/proc/self/fd/3",
		"-device", "isa-debug-exit,iobase="+exitPort+",iosize=0x04",
		"-no-reboot")
	cmd.ExtraFiles = []*os.File{fw}
	// If our process dies mid-probe, QEMU must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	stderr := &tailBuffer{limit: stderrLimit}
	cmd.Stderr = stderr
	cmd.Stdout = io.Discard

	err = cmd.Run()
	pid := 0
	if cmd.Process != nil {
		pid = cmd.Process.Pid
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return pid, fmt.Errorf("kvmprobe: %s -accel %s exited 0 before the probe guest ran: %w%s", qemuPath, accel, errdefs.ErrUnavailable, stderr.suffix())
	case errors.Is(ctx.Err(), context.Canceled):
		return pid, fmt.Errorf("kvmprobe: %w", ctx.Err())
	case ctx.Err() != nil:
		return pid, fmt.Errorf("kvmprobe: the probe guest under -accel %s did not finish within %s (this %s accepts guests but does not run them, e.g. a PVM-backed /dev/kvm); use accel = \"tcg\": %w",
			accel, budget, accelName(accel), errdefs.ErrUnavailable)
	case errors.As(err, &exit) && exit.ExitCode() == successCode:
		return pid, nil
	case errors.As(err, &exit):
		return pid, fmt.Errorf("kvmprobe: %s -accel %s failed (%v): %w%s", qemuPath, accel, err, errdefs.ErrUnavailable, stderr.suffix())
	default:
		return pid, fmt.Errorf("kvmprobe: cannot run %s: %v (install QEMU or set hypervisor.path): %w", qemuPath, err, errdefs.ErrUnavailable)
	}
}

func accelName(accel string) string {
	if accel == "kvm" {
		return "/dev/kvm"
	}
	return "accelerator"
}

// memfile returns an unlinked in-memory file holding data.
func memfile(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	limit int
	buf   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if extra := t.buf.Len() - t.limit; extra > 0 {
		t.buf.Next(extra)
	}
	return len(p), nil
}

func (t *tailBuffer) suffix() string {
	s := strings.TrimSpace(t.buf.String())
	if s == "" {
		return ""
	}
	return "; qemu said: " + strings.ReplaceAll(s, "\n", " | ")
}
