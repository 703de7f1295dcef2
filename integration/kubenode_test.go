//go:build integration

package integration

// The real-kubelet tests (issue 26): a one-node Kubernetes built from
// k8s.io/kubernetes (integration/harness/kubenode.go) whose kubelet runs
// pods on the shared containerd. Pods are made through the API with
// client-go and carry runtimeClassName, so what reaches the shim is exactly
// what a kubelet sends: its volume directories, projected service-account
// token, probes, logs and exec streams.
//
// COCO_KUBE=0 turns these tests off for a quick local run; otherwise a node
// that cannot be built or started fails them with the reason.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
)

var kubeNode struct {
	mu sync.Mutex
	k  *harness.Kube
}

// requireKube starts a node for this test and stops it when the test ends
// (the build is cached; `make kube-node` builds it before the tests on a
// fresh machine). The node must not outlive the test: its kubelet shares
// the harness's containerd and removes every pod it did not create, which
// would kill the CRI tests' pods.
func requireKube(t *testing.T) *harness.Kube {
	t.Helper()
	if os.Getenv("COCO_KUBE") == "0" {
		t.Skip("Kubernetes node tests turned off with COCO_KUBE=0")
	}
	kubeNode.mu.Lock()
	defer kubeNode.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	start := time.Now()
	bins, err := harness.BuildKube(ctx, shared.repo, logf)
	if err != nil {
		t.Fatalf("build the Kubernetes node (COCO_KUBE=0 skips these tests): %v", err)
	}
	logf("integration: Kubernetes %s binaries ready in %s", harness.KubeVersion, time.Since(start).Round(time.Second))
	start = time.Now()
	k, err := harness.StartKube(ctx, harness.KubeOptions{
		Bins:           bins,
		Containerd:     shared.ctrd,
		RuntimeClasses: []string{"runc", "coco", "coco-sandboxer", handlerRefuseHostDirs},
		Logf:           logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	logf("integration: Kubernetes node %s Ready in %s", k.NodeName, time.Since(start).Round(time.Second))
	kubeNode.k = k
	t.Cleanup(func() {
		if err := stopKubeNode(); err != nil {
			t.Errorf("Kubernetes node teardown: %v", err)
		}
	})
	return k
}

// stopKubeNode stops the node, if one runs: at the end of the test that
// started it, and from TestMain (a test that failed to clean up), before
// containerd stops: the kubelet's pods go through the kubelet first.
func stopKubeNode() error {
	kubeNode.mu.Lock()
	k := kubeNode.k
	kubeNode.k = nil
	kubeNode.mu.Unlock()
	if k == nil {
		return nil
	}
	k.KeepLogs(filepath.Join(shared.repo, "build", "integration"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return k.Stop(ctx)
}

// handlerRefuseHostDirs is the coco-dev class with [volumes] host_dirs =
// "refuse", what a TEE class does by default: the kubelet tests show that
// a hostPath pod is refused where the user looks (the pod's events).
const handlerRefuseHostDirs = "coco-refuse-hostdirs"

// kubeHandlers are the containerd handlers the kubelet tests add to the
// shared containerd (TestMain), with their configs in e.failDir.
func kubeHandlers(e *env) ([]harness.Handler, error) {
	path := filepath.Join(e.failDir, handlerRefuseHostDirs+".toml")
	body := "[hypervisor]\ninitrd = \"initrd-dev.img\"\ntools_image = \"tools.erofs\"\n[volumes]\nhost_dirs = \"refuse\"\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		return nil, err
	}
	return []harness.Handler{harness.CocoHandler(handlerRefuseHostDirs, path, "")}, nil
}
