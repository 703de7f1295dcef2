//go:build integration

package integration

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// netnsDir is where this containerd mounts pod network namespaces
// (netns_mounts_under_state_dir).
func netnsDir() string {
	return filepath.Join(shared.ctrd.Root, "state", "io.containerd.grpc.v1.cri", "netns")
}

// netnsList lists the pod network namespaces that exist now.
func netnsList(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(netnsDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Join(netnsDir(), e.Name()))
	}
	sort.Strings(out)
	return out
}

// inNetns runs a command (ip, tc) inside the namespace at path.
func inNetns(t *testing.T, path string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + path}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", path, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// podNetns finds the namespace in which the CNI plugin gave eth0 ip.
func podNetns(t *testing.T, ip string) string {
	t.Helper()
	for _, ns := range netnsList(t) {
		if strings.Contains(inNetns(t, ns, "ip", "-o", "addr", "show", "dev", "eth0"), " "+ip+"/") {
			return ns
		}
	}
	t.Fatalf("no network namespace under %s holds %s", netnsDir(), ip)
	return ""
}

// httpGet fetches url, retrying until limit (the server may still start).
func httpGet(t *testing.T, url string, limit time.Duration) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(limit)
	for {
		resp, err := c.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return string(b)
			}
			err = errors.Join(rerr, errors.New(resp.Status))
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v (for %s)", url, err, limit)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestPodNetwork: a pod on the harness's CNI bridge network serves HTTP on
// its pod IP, and the test (on the node, through the bridge) gets the page.
// Under coco the pod's eth0 is the VM's NIC: the container sees the pod IP
// on it, the pod's namespace on the host holds a tap with tc redirects,
// and after removal no namespace, tap or qdisc is left.
func TestPodNetwork(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 5*time.Minute)
		cri := shared.ctrd.CRI
		before := netnsList(t)
		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: "net-" + h.name, LogDir: t.TempDir()}))
		if err != nil {
			t.Fatalf("RunPodSandbox: %v", err)
		}
		removed := false
		defer func() {
			if !removed {
				if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}()
		st, err := cri.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.ID})
		if err != nil {
			t.Fatal(err)
		}
		ip := st.GetStatus().GetNetwork().GetIp()
		if ip == "" {
			t.Fatal("the pod has no IP")
		}
		ns := podNetns(t, ip)
		page := "hello-from-" + h.name
		web, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("web", "web.log", "sh", "-c",
			"mkdir -p /tmp/www && echo "+page+" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"))
		if err != nil {
			t.Fatal(err)
		}

		t.Run("container-sees-pod-ip", func(t *testing.T) {
			out, stderr, code, err := cri.Exec(ctx, web, 30*time.Second, "ip", "-o", "addr", "show")
			if err != nil || code != 0 {
				t.Fatalf("ip addr: code %d, err %v, stderr %q", code, err, stderr)
			}
			if !strings.Contains(out, "eth0") || !strings.Contains(out, " "+ip+"/") {
				t.Fatalf("the container's interfaces lack eth0 with %s:\n%s", ip, out)
			}
			if !strings.Contains(out, "lo ") || !strings.Contains(out, "127.0.0.1/8") {
				t.Fatalf("loopback is not up in the container:\n%s", out)
			}
			routes, _, _, _ := cri.Exec(ctx, web, 30*time.Second, "ip", "route")
			if !strings.Contains(routes, "default via") {
				t.Errorf("no default route in the container:\n%s", routes)
			}
		})

		t.Run("node-reaches-pod-ip", func(t *testing.T) {
			if got := httpGet(t, "http://"+ip+":8080/index.html", time.Minute); strings.TrimSpace(got) != page {
				t.Fatalf("page = %q, want %q", got, page)
			}
		})

		if h.coco {
			t.Run("tap-and-redirects", func(t *testing.T) {
				links := inNetns(t, ns, "ip", "-o", "link")
				filters := inNetns(t, ns, "tc", "filter", "show", "dev", "eth0", "ingress")
				if !strings.Contains(links, "coco-tap0") || !strings.Contains(filters, "Redirect to device coco-tap0") {
					t.Fatalf("pod namespace:\n%s\neth0 ingress filters:\n%s", links, filters)
				}
			})
		}

		if err := cri.RemovePod(ctx, pod.ID); err != nil {
			t.Fatal(err)
		}
		removed = true
		assertNoLeftovers(t, pod.ID, web)
		after := netnsList(t)
		if strings.Join(after, " ") != strings.Join(before, " ") {
			t.Errorf("network namespaces before the pod %v, after its removal %v", before, after)
		}
		if _, err := os.Stat(ns); err == nil {
			// The namespace outlived the pod: nothing of ours may be in it.
			if links := inNetns(t, ns, "ip", "-o", "link"); strings.Contains(links, "coco-tap") {
				t.Errorf("a tap is left in %s:\n%s", ns, links)
			}
		}
	})
}

// TestHostNetworkRefused: a hostNetwork pod cannot be a VM; the coco
// runtime classes refuse it with the reason, and nothing is left.
func TestHostNetworkRefused(t *testing.T) {
	for _, handler := range []string{"coco", "coco-sandboxer"} {
		t.Run(handler, func(t *testing.T) {
			requireGuest(t)
			ctx := testCtx(t, 2*time.Minute)
			cfg := harness.PodConfig(harness.PodOptions{Name: "hostnet-" + handler})
			cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
			pod, err := shared.ctrd.CRI.RunPod(ctx, handler, cfg)
			if err == nil {
				shared.ctrd.CRI.RemovePod(context.Background(), pod.ID)
				t.Fatal("a hostNetwork pod was accepted")
			}
			if !strings.Contains(err.Error(), "hostNetwork pods cannot run in a VM") {
				t.Fatalf("error does not say why: %v", err)
			}
			if m := sandboxIDInError.FindStringSubmatch(err.Error()); m != nil {
				assertNoLeftovers(t, m[1])
			}
		})
	}
}
