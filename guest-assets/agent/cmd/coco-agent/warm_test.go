//go:build linux

package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
)

// The warm-up delegates the controllers the containers' parent offers (a
// real cgroupfs makes cgroup.controllers on mkdir; here the test does) and
// then runs the runtime once it is there.
func TestWarmRuntime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "coco")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var waited, ran bool
	warmRuntime(context.Background(), dir,
		func(context.Context) error { waited = true; return nil },
		func() error {
			if !waited {
				t.Error("the runtime ran before its disk was waited for")
			}
			ran = true
			return nil
		})
	if !ran {
		t.Error("the runtime did not run")
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil || string(b) != "+cpu +memory +pids" {
		t.Errorf("subtree_control = %q, %v; want the parent's controllers delegated", b, err)
	}
}

// Without the runtime (no tools disk) nothing runs; a cgroup that cannot be
// made does not stop the runtime's warm-up.
func TestWarmRuntimeFailures(t *testing.T) {
	ran := false
	warmRuntime(context.Background(), filepath.Join(t.TempDir(), "missing", "coco"),
		func(context.Context) error { return errors.New("no tools disk") },
		func() error { ran = true; return nil })
	if ran {
		t.Error("ran a runtime that is not there")
	}
	warmRuntime(context.Background(), filepath.Join(t.TempDir(), "missing", "coco"),
		func(context.Context) error { return nil },
		func() error { ran = true; return nil })
	if !ran {
		t.Error("a cgroup error kept the runtime from its warm-up")
	}
}

// runVersion goes through the reaper, so a failing command is an error.
func TestRunVersion(t *testing.T) {
	// The agent's SIGCHLD loop (reap), polled: the reaper hands exits to
	// its subscribers only when asked to reap.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				reaper.Reap()
			}
		}
	}()
	if err := runVersion("true"); err != nil {
		t.Errorf("true --version: %v", err)
	}
	if err := runVersion("false"); err == nil {
		t.Error("false --version: no error")
	}
}
