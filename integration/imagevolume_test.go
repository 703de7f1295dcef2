//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// imageVolumeMount is a pod's `image:` volume of the test busybox image:
// its /bin/busybox is ~1.9 MB (over the 1 MiB a copied host file may be)
// and its applets are symbolic links to it.
func imageVolumeMount(dest string) *runtimeapi.Mount {
	return &runtimeapi.Mount{ContainerPath: dest, Image: &runtimeapi.ImageSpec{Image: harness.BusyboxImage}, Readonly: true}
}

// TestImageVolume: an image volume reaches the container whole (a file
// over 1 MiB with its mode, a symbolic link) and read-only (a write fails
// with EROFS), on runc and coco; on coco a deleted container leaves no
// volume image in the pod's state. With COCO_IMAGE_VOLUME_TIMES=n it also
// times n CreateContainer calls with and without an image volume.
func TestImageVolume(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 10*time.Minute)
		cri := shared.ctrd.CRI
		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: "imgvol-" + h.name, LogDir: t.TempDir()}))
		if err != nil {
			t.Fatalf("RunPodSandbox: %v", err)
		}
		defer cri.RemovePod(context.Background(), pod.ID)
		cfg := harness.ContainerConfig("app", "app.log", "sleep", "3600")
		cfg.Mounts = []*runtimeapi.Mount{imageVolumeMount("/image")}
		app, err := cri.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		sh := func(script string) (string, string, int32) {
			t.Helper()
			out, errOut, code, err := cri.Exec(ctx, app, 60*time.Second, "sh", "-c", script)
			if err != nil {
				t.Fatalf("exec %q: %v", script, err)
			}
			return strings.TrimSpace(out), strings.TrimSpace(errOut), code
		}
		if out, _, _ := sh("wc -c < /image/bin/busybox"); !bigger(out, 1<<20) {
			t.Errorf("/image/bin/busybox is %q bytes, want the whole binary (over 1 MiB)", out)
		}
		if out, _, code := sh("cmp /image/bin/busybox /bin/busybox && stat -c %a /image/bin/busybox && readlink /image/bin/sh"); code != 0 || out != "755\n/bin/busybox" {
			t.Errorf("content, mode and link in the volume: %q (exit %d), want 755 and the link /bin/busybox", out, code)
		}
		if _, errOut, code := sh("touch /image/new"); code == 0 || !strings.Contains(errOut, "Read-only file system") {
			t.Errorf("a write into the image volume: exit %d, %q; want EROFS", code, errOut)
		}
		if h.coco {
			images := filepath.Join(harness.CocoRunDir, pod.ID, "volumes")
			if left, err := os.ReadDir(images); err != nil || len(left) != 1 {
				t.Fatalf("the running container's volume image in %s: %v, %v; want one", images, left, err)
			}
			if _, err := cri.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: app, Timeout: 5}); err != nil {
				t.Fatal(err)
			}
			if _, err := cri.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: app}); err != nil {
				t.Fatal(err)
			}
			expectNoVolumeImages(t, pod.ID)
			timeImageVolume(ctx, t, pod)
		}
	})
}

func bigger(n string, than int) bool {
	v, err := strconv.Atoi(n)
	return err == nil && v > than
}

// expectNoVolumeImages waits for the hot-unplug after a container's
// delete (it runs in the background) to remove the pod's volume images.
func expectNoVolumeImages(t *testing.T, podID string) {
	t.Helper()
	dir := filepath.Join(harness.CocoRunDir, podID, "volumes")
	deadline := time.Now().Add(90 * time.Second)
	for {
		left, err := os.ReadDir(dir)
		if os.IsNotExist(err) || (err == nil && len(left) == 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume images left in %s after the container's delete: %v (%v)", dir, left, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// timeImageVolume times CreateContainer plus StartContainer of a container
// with and without an image volume, alternating, COCO_IMAGE_VOLUME_TIMES
// times each. The shim's work (image, hot-plug, the guest's mount) happens
// in StartContainer, when containerd creates the task. Each container is
// removed and its volume image gone before the next is timed, so no
// background hot-unplug overlaps a measurement.
func timeImageVolume(ctx context.Context, t *testing.T, pod *harness.Pod) {
	cri := shared.ctrd.CRI
	n, _ := strconv.Atoi(os.Getenv("COCO_IMAGE_VOLUME_TIMES"))
	if n <= 0 {
		return
	}
	times := map[bool][]time.Duration{}
	for i := range 2 * n {
		with := i%2 == 0
		cfg := harness.ContainerConfig(fmt.Sprintf("t%d", i), fmt.Sprintf("t%d.log", i), "sleep", "3600")
		if with {
			cfg.Mounts = []*runtimeapi.Mount{imageVolumeMount("/image")}
		}
		start := time.Now()
		id, err := cri.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatalf("image volume %v: %v", with, err)
		}
		times[with] = append(times[with], time.Since(start))
		if _, err := cri.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := cri.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		if with {
			expectNoVolumeImages(t, pod.ID)
		}
	}
	for _, with := range []bool{false, true} {
		d := slices.Clone(times[with])
		slices.Sort(d)
		t.Logf("CreateContainer+StartContainer with image volume %v: median %d ms (min %d, max %d, n=%d)", with,
			d[len(d)/2].Milliseconds(), d[0].Milliseconds(), d[len(d)-1].Milliseconds(), len(d))
	}
}
