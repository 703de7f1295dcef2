//go:build integration

package integration

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
)

// TestCtrRun runs a container with `ctr run --runtime ...`, the path that
// bypasses CRI: no pod, no pause container, the shim alone.
func TestCtrRun(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		if h.name == "coco-sandboxer" {
			t.Skip("ctr run has no sandboxer choice; the coco row covers io.containerd.coco.v2")
		}
		runtime, extra := "io.containerd.runc.v2", []string(nil)
		if h.coco {
			runtime, extra = "io.containerd.coco.v2", []string{"--runtime-config-path", harness.CocoDevConfig(shared.repo)}
		}
		run := func(t *testing.T, id string, args ...string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			argv := append([]string{"-n", "k8s.io", "run", "--rm", "--runtime", runtime}, extra...)
			argv = append(append(argv, harness.BusyboxImage, id), args...)
			out, err := shared.ctrd.Ctr(ctx, argv...)
			t.Cleanup(func() { assertNoLeftovers(t, id) })
			return out, err
		}

		t.Run("kernel", func(t *testing.T) {
			out, err := run(t, "ctr-kernel-"+h.name, "uname", "-r")
			if err != nil {
				t.Fatalf("ctr run: %v\n%s", err, out)
			}
			got, want := strings.TrimSpace(out), hostKernelRelease(t)
			if h.coco {
				want = guestKernelRelease(t)
			}
			if got != want {
				t.Fatalf("ctr run uname -r = %q, want %q", got, want)
			}
		})

		t.Run("exit-code", func(t *testing.T) {
			out, err := run(t, "ctr-exit-"+h.name, "sh", "-c", "exit 3")
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 3 {
				t.Fatalf("ctr run sh -c 'exit 3': err %v, want exit status 3\n%s", err, out)
			}
		})
	})
}
