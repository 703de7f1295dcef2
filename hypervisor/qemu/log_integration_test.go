//go:build integration

package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQEMUStderrInStartError: what QEMU prints before dying (kept in
// qemu.log in the state dir, not in shim memory) reaches the Start error,
// and the state dir with the log is gone afterwards.
func TestQEMUStderrInStartError(t *testing.T) {
	if _, err := exec.LookPath(DefaultDaemon); err != nil {
		t.Skip("vhost-device-vsock not installed: scripts/install-deps.sh")
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(dir, "qemu-system-x86_64")
	script := "#!/bin/sh\necho 'fake qemu: first line' >&2\necho 'fake qemu: cannot start, says stderr' >&2\nexit 3\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := bootEnv{kernel: kernel}.config(t, "")
	cfg.Path = fake
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = vm.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "fake qemu: first line\nfake qemu: cannot start, says stderr") {
		t.Fatalf("want QEMU's stderr in the start error, got %v", err)
	}
	if _, serr := os.Stat(cfg.StateDir); !os.IsNotExist(serr) {
		t.Errorf("state dir left behind after a failed start: %v", serr)
	}
	assertNothingLeft(t, cfg)
}
