//go:build integration

package integration

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// TestPodUserNamespace: a pod with hostUsers: false (NamespaceMode_POD and
// id mappings) on coco: the container runs in the pod's user namespace
// with its mappings, sees the image's files owned as the image says (root),
// and root in it can write its rootfs (copy-up of an image file, a new
// file), both owned by its root. Through the coco-critest handler, whose
// shim takes no runtime options (containerd cannot start a user namespace
// pod's container on a handler with options, see critest_test.go). runc is
// not run: it cannot make the pod's user namespace on these hosts (see the
// README's critest section).
func TestPodUserNamespace(t *testing.T) {
	requireGuest(t)
	ctx := testCtx(t, 10*time.Minute)
	cri := shared.ctrd.CRI
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 1000, Length: 65536}}
	ns := &runtimeapi.NamespaceOption{
		Pid:           runtimeapi.NamespaceMode_CONTAINER,
		UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping},
	}
	podCfg := harness.PodConfig(harness.PodOptions{Name: "userns", LogDir: t.TempDir()})
	podCfg.Linux.SecurityContext.NamespaceOptions = ns
	pod, err := cri.RunPod(ctx, handlerCritest, podCfg)
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	defer cri.RemovePod(context.Background(), pod.ID)
	cfg := harness.ContainerConfig("app", "app.log", "sleep", "3600")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns}
	app, err := cri.StartContainer(ctx, pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sh := func(script string) string {
		t.Helper()
		out, errOut, code, err := cri.Exec(ctx, app, 60*time.Second, "sh", "-c", script)
		if err != nil || code != 0 {
			t.Fatalf("exec %q: exit %d, %v: %s", script, code, err, errOut)
		}
		return strings.TrimSpace(out)
	}
	if out := sh("cat /proc/self/uid_map /proc/self/gid_map"); !regexp.MustCompile(`^\s*0\s+1000\s+65536\n\s*0\s+1000\s+65536$`).MatchString(out) {
		t.Errorf("uid_map and gid_map %q, want 0 1000 65536 each", out)
	}
	if out := sh("id -u; stat -c %u:%g / /etc/passwd /bin/busybox"); out != "0\n0:0\n0:0\n0:0" {
		t.Errorf("id and owners of /, /etc/passwd, /bin/busybox: %q, want root and 0:0 (the image's owners)", out)
	}
	if out := sh("echo x:x:7:7::/:/bin/sh >> /etc/passwd && touch /new && stat -c %u:%g /etc/passwd /new && tail -n 1 /etc/passwd"); out != "0:0\n0:0\nx:x:7:7::/:/bin/sh" {
		t.Errorf("after root wrote /etc/passwd and /new: %q, want both 0:0 and the line appended", out)
	}
}
