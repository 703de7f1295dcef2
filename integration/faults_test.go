//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// The state filesystem full (issue 27): the handler coco-smallrun runs the
// shim with its own run directory (COCO_RUN_DIR, set by a wrapper that
// containerd runs as the shim binary, for `start` and `delete` alike), on
// which the test mounts a small tmpfs and fills it.
const handlerSmallRun = "coco-smallrun"

func smallRunDir() string { return smallRunDirOf(shared) }

// smallRunDirOf is short, as the run directory must be: the QMP socket's
// path in it must fit a unix socket address (107 bytes): /run/coco is
// 9 bytes and leaves 7 to spare. The test makes and removes it.
func smallRunDirOf(e *env) string {
	id := filepath.Base(filepath.Dir(e.failDir)) // coco-it-<digits>
	return "/run/cocoit-" + id[max(0, len(id)-4):]
}

func smallRunHandler(e *env) (harness.Handler, error) {
	dir := smallRunDirOf(e)
	wrapper := filepath.Join(e.failDir, "shim-smallrun")
	script := fmt.Sprintf("#!/bin/sh\n# The shim with a run directory of its own.\nCOCO_RUN_DIR=%q exec %q \"$@\"\n", dir, e.bins.CocoShim)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		return harness.Handler{}, err
	}
	h := harness.CocoHandler(handlerSmallRun, harness.CocoDevConfig(e.repo), "")
	h.RuntimePath = wrapper
	return h, nil
}

// fill writes a file into dir until its filesystem has no byte left.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{1 << 20, 4096, 1} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	return p
}

// assertOnlyFiller waits until nothing of a pod is left in dir (only the
// filler, if any) and no process names dir.
func assertOnlyFiller(t *testing.T, dir string) {
	t.Helper()
	waitFor(t, censusSettle, func() (bool, string) {
		if pids := harness.ProcessesMentioning(dir); len(pids) > 0 {
			return false, fmt.Sprintf("process %d runs on: %s", pids[0], harness.Cmdline(pids[0]))
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() != "filler" {
				return false, fmt.Sprintf("%s keeps %s", dir, e.Name())
			}
		}
		return true, ""
	})
}

// TestStateDirFull: with the state filesystem full, RunPodSandbox fails
// saying so and leaves nothing; when it fills up between the pod's start
// and a container, CreateContainer fails saying so, leaves no rootfs image,
// and the pod takes a container again once there is room; removal leaves
// nothing.
func TestStateDirFull(t *testing.T) {
	requireGuest(t)
	dir := smallRunDir()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=64m,mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	ctx := testCtx(t, 6*time.Minute)
	cri := shared.ctrd.CRI
	before := shared.ctrd.Census()

	filler := fill(t, dir)
	_, err := cri.RunPod(ctx, handlerSmallRun, harness.PodConfig(harness.PodOptions{Name: "full-at-start", LogDir: t.TempDir()}))
	if err == nil {
		t.Fatal("RunPodSandbox succeeded on a full state filesystem")
	}
	t.Logf("full at the start: %v", err)
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("the error does not say the state filesystem is full: %v", err)
	}
	assertOnlyFiller(t, dir)
	os.Remove(filler)

	pod, err := cri.RunPod(ctx, handlerSmallRun, harness.PodConfig(harness.PodOptions{Name: "full-later", LogDir: t.TempDir()}))
	if err != nil {
		t.Fatalf("RunPodSandbox with room: %v", err)
	}
	removed := false
	defer func() {
		if !removed {
			cri.RemovePod(context.Background(), pod.ID)
		}
	}()
	filler = fill(t, dir)
	id, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("nospace", "nospace.log", "sleep", "1000"))
	if err == nil {
		t.Fatal("a container started with the state filesystem full")
	}
	t.Logf("full at CreateContainer: %v", err)
	if !strings.Contains(err.Error(), "the state filesystem is full") {
		t.Errorf("the error does not say the state filesystem is full: %v", err)
	}
	if id != "" {
		cri.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
	}
	if images, _ := filepath.Glob(filepath.Join(dir, pod.ID, "rootfs", "*")); len(images) > 0 {
		t.Errorf("a failed CreateContainer left %v", images)
	}
	os.Remove(filler)
	ctr, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("after", "after.log", "sleep", "1000"))
	if err != nil {
		t.Fatalf("a container once there is room again: %v", err)
	}
	if out, _, code, err := cri.Exec(ctx, ctr, 30*time.Second, "echo", "room"); err != nil || code != 0 || strings.TrimSpace(out) != "room" {
		t.Errorf("ExecSync: %q, code %d, %v", out, code, err)
	}
	if err := cri.RemovePod(ctx, pod.ID); err != nil {
		t.Fatal(err)
	}
	removed = true
	assertOnlyFiller(t, dir)
	assertCensusBack(t, before, "state filesystem full")
}
