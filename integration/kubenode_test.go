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
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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

// TestKubeletEmptyDirSubPath: a subPath of an emptyDir is that directory of
// the volume, in the guest as on a runc node. An init container writes
// through the subPath before anything mounts the whole volume (so the
// subPath makes the pod's emptyDir), then one container mounts the whole
// emptyDir and another the subPath, and each sees what the other writes.
func TestKubeletEmptyDirSubPath(t *testing.T) {
	k := requireKube(t)
	for _, rc := range handlerRows[:2] { // runc, coco: the sandboxer class shares the volume code
		t.Run(rc.name, func(t *testing.T) {
			if rc.coco {
				requireGuest(t)
			}
			ctx := testCtx(t, 8*time.Minute)
			ns := "kubelet-subpath-" + rc.name
			if err := k.Namespace(ctx, ns); err != nil {
				t.Fatal(err)
			}
			rcName, grace := rc.name, int64(1)
			mount := func(subPath, at string) []corev1.VolumeMount {
				return []corev1.VolumeMount{{Name: "shared", MountPath: at, SubPath: subPath}}
			}
			ctr := func(name, script string, mounts []corev1.VolumeMount) corev1.Container {
				return corev1.Container{Name: name, Image: harness.BusyboxImage, ImagePullPolicy: corev1.PullNever,
					Command: []string{"sh", "-c", script}, VolumeMounts: mounts}
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "subpath", Namespace: ns},
				Spec: corev1.PodSpec{
					NodeName: k.NodeName, RuntimeClassName: &rcName, TerminationGracePeriodSeconds: &grace,
					InitContainers: []corev1.Container{ctr("init", "echo from init > /logs/init", mount("logs/app", "/logs"))},
					Containers: []corev1.Container{
						ctr("whole", "exec sleep 3600", mount("", "/shared")),
						ctr("sub", "exec sleep 3600", mount("logs/app", "/logs")),
					},
					Volumes: []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			}
			created, err := k.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := waitKubePod(ctx, k, created, 5*time.Minute, podReady)
			if err != nil {
				t.Fatalf("pod %s/%s (runtimeClassName %s) not Ready: %v\n%s", ns, pod.Name, rc.name, err, kubePodReport(ctx, k, got))
			}
			kubeExpect(ctx, t, k, got, "whole", "from init", "cat", "/shared/logs/app/init")
			kubeExpect(ctx, t, k, got, "sub", "from init", "cat", "/logs/init")
			kubeExec(ctx, t, k, got, "sub", "sh", "-c", "echo from sub > /logs/sub")
			kubeExpect(ctx, t, k, got, "whole", "from sub", "cat", "/shared/logs/app/sub")
			kubeExec(ctx, t, k, got, "whole", "sh", "-c", "echo from whole > /shared/logs/app/whole; echo outside > /shared/top")
			kubeExpect(ctx, t, k, got, "sub", "from whole", "cat", "/logs/whole")
			// The subPath shows its directory only, not the volume.
			kubeExpect(ctx, t, k, got, "sub", "init sub whole", "sh", "-c", "echo $(ls /logs)")
			deleteKubePod(ctx, t, k, got)
		})
	}
}

// TestKubeletEmptyDirDisk: an emptyDir annotated "<size>,disk" is, in a
// coco pod, a sparse file of that size in the kubelet's host directory of
// the volume, hot-plugged into the guest and encrypted there (dm-crypt,
// file system made in the guest): two containers share it, writing past the size
// is ENOSPC, and the host file holds what was written (the kubelet's
// accounting sees it) as ciphertext. runc shares the same directory.
func TestKubeletEmptyDirDisk(t *testing.T) {
	k := requireKube(t)
	for _, rc := range handlerRows[:2] {
		t.Run(rc.name, func(t *testing.T) {
			if rc.coco {
				requireGuest(t)
			}
			ctx := testCtx(t, 8*time.Minute)
			ns := "kubelet-emptydir-disk-" + rc.name
			if err := k.Namespace(ctx, ns); err != nil {
				t.Fatal(err)
			}
			rcName, grace := rc.name, int64(1)
			ctr := func(name string) corev1.Container {
				return corev1.Container{Name: name, Image: harness.BusyboxImage, ImagePullPolicy: corev1.PullNever,
					Command: []string{"sh", "-c", "exec sleep 3600"}, VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "disk", Namespace: ns,
					Annotations: map[string]string{"emptydir.coco-runtime.io/data": "8Mi,disk"}},
				Spec: corev1.PodSpec{
					NodeName: k.NodeName, RuntimeClassName: &rcName, TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{ctr("a"), ctr("b")},
					Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			}
			created, err := k.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := waitKubePod(ctx, k, created, 5*time.Minute, podReady)
			if err != nil {
				t.Fatalf("pod %s/%s (runtimeClassName %s) not Ready: %v\n%s", ns, pod.Name, rc.name, err, kubePodReport(ctx, k, got))
			}
			const secret = "plaintext-that-must-not-reach-the-host"
			kubeExec(ctx, t, k, got, "a", "sh", "-c", "for i in $(seq 2000); do echo "+secret+"; done > /data/f")
			kubeExpect(ctx, t, k, got, "b", secret, "sh", "-c", "head -1 /data/f")
			if !rc.coco {
				deleteKubePod(ctx, t, k, got)
				return
			}
			logPreparePhases(ctx, t, got)
			mounts := kubeExec(ctx, t, k, got, "b", "grep", " /data ", "/proc/mounts")
			if !strings.HasPrefix(mounts, "/dev/dm-") || !strings.Contains(mounts, " ext4 ") {
				t.Errorf("/data in the guest: %q, want an ext4 file system on a dm-crypt mapping", mounts)
			}
			// 16 MiB into an 8 MiB disk.
			out := kubeExec(ctx, t, k, got, "a", "sh", "-c", "dd if=/dev/zero of=/data/big bs=1024 count=16384 2>&1; echo rc=$?")
			if !strings.Contains(out, "No space left on device") || strings.Contains(out, "rc=0") {
				t.Errorf("writing past the 8Mi disk: %q, want ENOSPC", out)
			}
			kubeExec(ctx, t, k, got, "a", "sync")
			host := filepath.Join(k.KubeletRoot, "pods", string(got.UID), "volumes", "kubernetes.io~empty-dir", "data", ".coco-emptydir.img")
			b, err := os.ReadFile(host)
			if err != nil {
				t.Fatalf("the host file of the disk: %v", err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(host, &st); err != nil || len(b) != 8<<20 || st.Blocks*512 < 4<<20 {
				t.Errorf("host file: %d bytes, %d allocated (%v): want 8 MiB, most of it written", len(b), st.Blocks*512, err)
			}
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("the host file holds the plaintext")
			}
			deleteKubePod(ctx, t, k, got)
		})
	}
}

// logPreparePhases logs each container's PrepareContainer time (guest
// side: bundle, volumes, rootfs) from the pod's phases.json: the first
// container of a disk-backed emptyDir pays for its disk (wait, dm-crypt,
// mkfs), the next one does not.
func logPreparePhases(ctx context.Context, t *testing.T, pod *corev1.Pod) {
	t.Helper()
	sbs, err := shared.ctrd.CRI.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{
		Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"io.kubernetes.pod.uid": string(pod.UID)}}})
	if err != nil || len(sbs.GetItems()) == 0 {
		t.Logf("no sandbox to read phases of: %v", err)
		return
	}
	ph, ok := readPhases(sbs.GetItems()[0].Id)
	if !ok {
		t.Logf("no phases.json")
		return
	}
	for _, c := range ph.Containers {
		t.Logf("container %.12s: rootfs %.0f ms, prepare %.0f ms, create %.0f ms", c.ID, c.RootfsMs, c.PrepareMs, c.CreateMs)
	}
}
