package measure

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// The AmdSev build verifies kernel hashes in every mode; the generic build
// (hashes page GPA 0, no SNP_KERNEL_HASHES section) in none.
func TestCheckKernelHashes(t *testing.T) {
	amd, x64 := loadOVMF(t, amdSev), loadOVMF(t, ovmfX64)
	for _, m := range []Mode{ModeSEV, ModeSEVES, ModeSNP} {
		if err := amd.CheckKernelHashes(m); err != nil {
			t.Errorf("AmdSev, %s: %v", m, err)
		}
		err := x64.CheckKernelHashes(m)
		var nk *NoKernelHashesError
		if !errors.As(err, &nk) || !errdefs.IsFailedPrecondition(err) || !strings.Contains(nk.Reason, "AmdSev") {
			t.Errorf("OvmfX64, %s: %v", m, err)
		}
	}
	// A hashes page outside the SNP metadata is enough for SEV, not SNP.
	noSection := &OVMF{table: amd.table}
	if err := noSection.CheckKernelHashes(ModeSEV); err != nil {
		t.Errorf("sev without metadata: %v", err)
	}
	var nk *NoKernelHashesError
	if err := noSection.CheckKernelHashes(ModeSNP); !errors.As(err, &nk) || !strings.Contains(nk.Reason, "SNP_KERNEL_HASHES") {
		t.Errorf("snp without the section: %v", err)
	}
}

func TestCheckFirmwareFile(t *testing.T) {
	dir := t.TempDir()
	suffix, err := os.ReadFile(amdSev)
	if err != nil {
		t.Fatal(err)
	}
	// A full-size image: only its end is read.
	big := filepath.Join(dir, "OVMF.amdsev.fd")
	if err := os.WriteFile(big, append(make([]byte, 1<<20), suffix...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckFirmwareFile(big, ModeSNP); err != nil {
		t.Fatalf("AmdSev image: %v", err)
	}
	if err := CheckFirmwareFile(ovmfX64, ModeSEV); !errors.As(err, new(*NoKernelHashesError)) {
		t.Fatalf("generic image: %v", err)
	}
	if err := CheckFirmwareFile(filepath.Join(dir, "absent.fd"), ModeSEV); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("absent: %v", err)
	}
	odd := filepath.Join(dir, "odd.fd")
	os.WriteFile(odd, make([]byte, 4097), 0o600)
	if err := CheckFirmwareFile(odd, ModeSEV); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "4 KiB pages") {
		t.Fatalf("odd size: %v", err)
	}
	if err := CheckFirmwareFile(dir, ModeSEV); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("directory: %v", err)
	}
	// A FIFO in the firmware's place (a writer that never writes) must
	// not block the check.
	fifo := filepath.Join(dir, "fifo.fd")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- CheckFirmwareFile(fifo, ModeSEV) }()
	select {
	case err := <-done:
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("fifo: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CheckFirmwareFile blocked on a FIFO")
	}
}
