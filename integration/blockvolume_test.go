//go:build integration

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// TestBlockVolume: a block device given to a container the way the kubelet
// gives a pod's volumeDevices (a CRI device: host path, container path,
// permissions) is a block device node in the container; a pattern written
// there reaches the host device (a loop device the test makes and
// removes) and a second container that may only read it reads the
// pattern back and cannot write. On runc and coco.
func TestBlockVolume(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 10*time.Minute)
		cri := shared.ctrd.CRI
		backing := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(backing, make([]byte, 16<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
		if err != nil {
			t.Fatalf("losetup: %v: %s", err, out)
		}
		loop := strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })

		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: "blkvol-" + h.name, LogDir: t.TempDir()}))
		if err != nil {
			t.Fatalf("RunPodSandbox: %v", err)
		}
		defer cri.RemovePod(context.Background(), pod.ID)
		start := func(name, perms string) string {
			cfg := harness.ContainerConfig(name, name+".log", "sleep", "3600")
			cfg.Devices = []*runtimeapi.Device{{ContainerPath: "/dev/xvdb", HostPath: loop, Permissions: perms}}
			id, err := cri.StartContainer(ctx, pod, cfg)
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		sh := func(id, script string) (string, string, int32) {
			t.Helper()
			out, errOut, code, err := cri.Exec(ctx, id, 60*time.Second, "sh", "-c", script)
			if err != nil {
				t.Fatalf("exec %q: %v", script, err)
			}
			return strings.TrimSpace(out), strings.TrimSpace(errOut), code
		}
		pattern := "coco block volume " + h.name
		rw := start("writer", "rwm")
		if out, errOut, code := sh(rw, "test -b /dev/xvdb && printf '"+pattern+"' | dd of=/dev/xvdb bs=512 seek=3 conv=sync,fsync 2>&1 && echo written"); code != 0 || !strings.HasSuffix(out, "written") {
			t.Fatalf("write the pattern: exit %d, %q %q", code, out, errOut)
		}
		if out, _, _ := sh(rw, "dd if=/dev/xvdb bs=512 skip=3 count=1 iflag=direct 2>/dev/null | head -c "+strconv.Itoa(len(pattern))); out != pattern {
			t.Fatalf("read back in the container: %q, want %q", out, pattern)
		}
		b, err := os.ReadFile(backing)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(b[3*512 : 3*512+len(pattern)]); got != pattern {
			t.Fatalf("the host device holds %q at the pattern's offset, want %q", got, pattern)
		}

		ro := start("reader", "r")
		if out, _, _ := sh(ro, "dd if=/dev/xvdb bs=512 skip=3 count=1 2>/dev/null | head -c "+strconv.Itoa(len(pattern))); out != pattern {
			t.Errorf("read-only container reads %q, want %q", out, pattern)
		}
		if out, errOut, code := sh(ro, "echo x | dd of=/dev/xvdb bs=512 seek=5 conv=sync,fsync"); code == 0 {
			t.Errorf("a write through the read-only device succeeded: %q %q", out, errOut)
		}
	})
}
