//go:build integration

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// kubeletWrite writes a volume's files as the kubelet's atomic writer
// does: a new ..<timestamp> directory, the top-level links, then ..data
// renamed over to point at the new directory (the flip apps watch for).
func kubeletWrite(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(ts, 0o755)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err != nil {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// TestVolumeUpdate: a configMap volume laid out by the kubelet's atomic
// writer shows its content in the container, with the ..data layout, and
// an update on the host reaches the running container within ~3 s; the
// termination message a container writes reaches the kubelet's host file.
func TestVolumeUpdate(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 5*time.Minute)
		cri := shared.ctrd.CRI
		kubelet := filepath.Join(t.TempDir(), "pods", "uid-"+h.name)
		cfgVol := filepath.Join(kubelet, "volumes", "kubernetes.io~configmap", "cfg")
		kubeletWrite(t, cfgVol, map[string]string{"greeting": "v1", "other": "x"})
		termLog := filepath.Join(kubelet, "containers", "app", "0a1b2c3d")
		os.MkdirAll(filepath.Dir(termLog), 0o755)
		if err := os.WriteFile(termLog, nil, 0o666); err != nil {
			t.Fatal(err)
		}

		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: "vol-" + h.name, LogDir: t.TempDir()}))
		if err != nil {
			t.Fatalf("RunPodSandbox: %v", err)
		}
		defer cri.RemovePod(context.Background(), pod.ID)
		cfg := harness.ContainerConfig("app", "app.log", "sleep", "3600")
		cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/etc/cfg", HostPath: cfgVol, Readonly: true}}
		app, err := cri.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		cat := func() string {
			out, _, _, _ := cri.Exec(ctx, app, 30*time.Second, "cat", "/etc/cfg/greeting")
			return strings.TrimSpace(out)
		}
		if got := cat(); got != "v1" {
			t.Fatalf("greeting %q, want v1", got)
		}
		out, _, code, err := cri.Exec(ctx, app, 30*time.Second, "sh", "-c", "readlink /etc/cfg/..data && readlink /etc/cfg/greeting")
		if err != nil || code != 0 || !strings.HasPrefix(out, "..") || !strings.Contains(out, "..data/greeting") {
			t.Fatalf("atomic writer layout in the container: %q code %d %v", out, code, err)
		}

		t0 := time.Now()
		kubeletWrite(t, cfgVol, map[string]string{"greeting": "v2"})
		for cat() != "v2" {
			if time.Since(t0) > 10*time.Second {
				t.Fatalf("update not seen within 10 s (greeting %q)", cat())
			}
			time.Sleep(100 * time.Millisecond)
		}
		lat := time.Since(t0)
		t.Logf("%s: volume update seen in the container %d ms after the ..data flip", h.name, lat.Milliseconds())
		if lat > 3500*time.Millisecond {
			t.Errorf("update took %s, want within ~3 s", lat)
		}

		term := harness.ContainerConfig("term", "term.log", "sh", "-c", "printf 'bye from the guest' > /dev/termination-log; exit 2")
		term.Mounts = []*runtimeapi.Mount{{ContainerPath: "/dev/termination-log", HostPath: termLog}}
		id, err := cri.StartContainer(ctx, pod, term)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cri.WaitExited(ctx, id, time.Minute); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(termLog); string(b) != "bye from the guest" {
			t.Fatalf("host termination log %q", b)
		}
	})
}
