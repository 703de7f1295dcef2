//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// TestUpdateContainerResources: containerd re-sends the spec's device
// cgroup rules with every resource update; on coco the guest leaves them
// out (the container keeps the rules it was created with), so the update
// applies and the container's devices still work after it.
func TestUpdateContainerResources(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 10*time.Minute)
		cri := shared.ctrd.CRI
		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: "update-" + h.name, LogDir: t.TempDir()}))
		if err != nil {
			t.Fatalf("RunPodSandbox: %v", err)
		}
		defer cri.RemovePod(context.Background(), pod.ID)
		app, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("app", "app.log", "sleep", "3600"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = cri.Runtime.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: app,
			Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 256 << 20, CpuShares: 512}})
		if err != nil {
			t.Fatalf("UpdateContainerResources: %v", err)
		}
		out, errOut, code, err := cri.Exec(ctx, app, 60*time.Second, "sh", "-c", "echo x > /dev/null && head -c 4 /dev/zero | wc -c")
		if err != nil || code != 0 || strings.TrimSpace(out) != "4" {
			t.Fatalf("devices after the update: %q %q exit %d, %v; want /dev/null and /dev/zero usable", out, errOut, code, err)
		}
	})
}
