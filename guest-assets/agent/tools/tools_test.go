//go:build linux

package tools

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func pathWith(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
	return dir
}

// A binary the initrd carries needs no disk: Wait returns before the disk
// is ready.
func TestWaitFoundAtOnce(t *testing.T) {
	pathWith(t, "crun")
	d := New()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := d.Wait(ctx, "crun"); err != nil {
		t.Fatal(err)
	}
}

// A binary on the disk is waited for; one on neither names the fix.
func TestWaitForDisk(t *testing.T) {
	dir := pathWith(t)
	d := New()
	done := make(chan error, 1)
	go func() { done <- d.Wait(context.Background(), "coco-policy") }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned before the disk was ready: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The "mount" makes the binary appear, then the disk is ready.
	if err := os.WriteFile(filepath.Join(dir, "coco-policy"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d.Skip("test")
	if err := <-done; err != nil {
		t.Fatalf("binary present after the disk: %v", err)
	}
	err := d.Wait(context.Background(), "crun")
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "crun") || !strings.Contains(err.Error(), "initrd.img") || !strings.Contains(err.Error(), "test") {
		t.Fatalf("want FailedPrecondition naming crun, the fix and the reason; got %v", err)
	}
}

func TestWaitCancelled(t *testing.T) {
	pathWith(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := New().Wait(ctx, "crun"); err == nil || !strings.Contains(err.Error(), "tools disk") {
		t.Fatalf("want a cancelled wait, got %v", err)
	}
}

// No disk with the serial: nothing mounted, no error, and the Disk is ready.
func TestMountWithoutDisk(t *testing.T) {
	sys := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sys, "vda"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(sys, "vda", "serial"), []byte("initdata\n"), 0o644)
	os.WriteFile(filepath.Join(sys, "vda", "size"), []byte("8\n"), 0o644)
	pathWith(t)
	d := New()
	mounted, err := d.Mount(sys, "/dev", "coco-tools", filepath.Join(t.TempDir(), "tools"))
	if mounted || err != nil {
		t.Fatalf("Mount = %v, %v; want false, nil", mounted, err)
	}
	err = d.Wait(context.Background(), "crun")
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "no tools disk") {
		t.Fatalf("want the missing disk named, got %v", err)
	}
}
