//go:build integration

package integration

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodLifecycle walks one pod through the whole CRI life cycle, the way
// the kubelet does, checking each step's effect: kernel, logs, shared PID
// namespace, exit codes, stop grace period, removal and what is left after.
// One pod per handler carries all steps, because for coco every pod is a VM boot.
func TestPodLifecycle(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 5*time.Minute)
		cri := shared.ctrd.CRI
		logDir := t.TempDir()
		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: "life-" + h.name, LogDir: logDir, SharePID: true}))
		if err != nil {
			t.Fatalf("RunPodSandbox: %v", err)
		}
		var ids = []string{pod.ID}
		defer func() {
			if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}()

		main, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("main", "main.log",
			"sh", "-c", "echo hello-from-$(hostname); echo to-stderr >&2; exec sleep 1000"))
		ids = append(ids, main)
		if err != nil {
			t.Fatal(err)
		}

		t.Run("kernel", func(t *testing.T) {
			out, stderr, code, err := cri.Exec(ctx, main, 30*time.Second, "uname", "-r")
			if err != nil || code != 0 {
				t.Fatalf("ExecSync uname -r: code %d, err %v, stderr %q", code, err, stderr)
			}
			got, host := strings.TrimSpace(out), hostKernelRelease(t)
			if !h.coco {
				if got != host {
					t.Fatalf("runc container kernel %q, want the host's %q", got, host)
				}
				return
			}
			if want := guestKernelRelease(t); got != want {
				t.Fatalf("container kernel %q, want the guest's %q (host: %q)", got, want, host)
			}
			if got == host {
				t.Fatalf("container kernel %q equals the host's: not in a VM", got)
			}
		})

		t.Run("logs", func(t *testing.T) {
			path := filepath.Join(logDir, "main.log")
			want := []string{" stdout F hello-from-life-" + h.name, " stderr F to-stderr"}
			waitFor(t, 20*time.Second, func() (bool, string) {
				b, _ := os.ReadFile(path)
				for _, w := range want {
					if !strings.Contains(string(b), w) {
						return false, "CRI log " + path + " lacks " + w + "; has:\n" + string(b)
					}
				}
				return true, ""
			})
		})

		t.Run("shared-pid-namespace", func(t *testing.T) {
			peer, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("peer", "peer.log", "sleep", "1001"))
			ids = append(ids, peer)
			if err != nil {
				t.Fatal(err)
			}
			out, _, code, err := cri.Exec(ctx, peer, 30*time.Second, "ps", "-o", "pid,args")
			if err != nil || code != 0 {
				t.Fatalf("ExecSync ps: code %d, err %v", code, err)
			}
			if !strings.Contains(out, "sleep 1000") {
				t.Fatalf("peer does not see main's process in a pod with a shared PID namespace; ps:\n%s", out)
			}
			// The sandbox container's pause process is the namespace's init
			// (coco: the agent's own pause task, runc: the pause image).
			if !regexp.MustCompile(`(?m)^\s*1\s+\S*pause\b`).MatchString(out) {
				t.Fatalf("PID 1 of the pod's shared PID namespace is not pause; ps:\n%s", out)
			}
		})

		t.Run("exit-code", func(t *testing.T) {
			id, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("exit3", "exit3.log", "sh", "-c", "exit 3"))
			ids = append(ids, id)
			if err != nil {
				t.Fatal(err)
			}
			st, err := cri.WaitExited(ctx, id, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if st.ExitCode != 3 {
				t.Fatalf("exit code %d, want 3 (reason %q)", st.ExitCode, st.Reason)
			}
		})

		t.Run("stop-grace-period", func(t *testing.T) {
			// PID 1 traps TERM and keeps going, so only the KILL after the
			// grace period ends it; the log proves TERM came first.
			id, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("stubborn", "stubborn.log",
				"sh", "-c", "trap 'echo got-term' TERM; echo ready; while true; do sleep 0.2; done"))
			ids = append(ids, id)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, func() (bool, string) {
				b, _ := os.ReadFile(filepath.Join(logDir, "stubborn.log"))
				return strings.Contains(string(b), "stdout F ready"), "container never printed ready"
			})
			const grace = 3
			start := time.Now()
			if _, err := cri.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: grace}); err != nil {
				t.Fatalf("StopContainer: %v", err)
			}
			took := time.Since(start)
			if took < grace*time.Second {
				t.Errorf("StopContainer returned after %s, before the %ds grace period", took, grace)
			}
			if took > (grace+20)*time.Second {
				t.Errorf("StopContainer took %s: the kill after the %ds grace period came late", took, grace)
			}
			st, err := cri.WaitExited(ctx, id, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if st.ExitCode != 137 {
				t.Errorf("exit code %d, want 137 (SIGKILL) after the grace period", st.ExitCode)
			}
			b, _ := os.ReadFile(filepath.Join(logDir, "stubborn.log"))
			if !strings.Contains(string(b), "stdout F got-term") {
				t.Errorf("container never saw SIGTERM before the kill; log:\n%s", b)
			}
		})

		t.Run("remove", func(t *testing.T) {
			// The leak check must see a live pod, or its silence after
			// removal would prove nothing.
			live := strings.Join(shared.ctrd.Leftovers(pod.ID), "\n")
			wants := []string{"process ", "shim socket ", "directory "}
			if h.coco {
				// No vhost-device-vsock: the shim serves the vsock device.
				wants = append(wants, "qemu-system", "directory "+harness.CocoRunDir+"/"+pod.ID)
			}
			for _, want := range wants {
				if !strings.Contains(live, want) {
					t.Errorf("leak check sees no %q of the live pod %s; it sees:\n%s", want, pod.ID, live)
				}
			}
			for _, id := range ids[1:] {
				if _, err := cri.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 0}); err != nil {
					t.Errorf("StopContainer %s: %v", id, err)
				}
				if _, err := cri.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
					t.Errorf("RemoveContainer %s: %v", id, err)
				}
			}
			list, err := cri.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{
				Filter: &runtimeapi.ContainerFilter{PodSandboxId: pod.ID}})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Containers) != 0 {
				t.Errorf("%d containers still listed after RemoveContainer", len(list.Containers))
			}
			if err := cri.RemovePod(ctx, pod.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := cri.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.ID}); err == nil {
				t.Errorf("PodSandboxStatus still answers after RemovePodSandbox")
			}
			assertNoLeftovers(t, ids...)
		})
	})
}

// TestPIDNamespacePerContainer is the negative half of the shared-PID check:
// without a shared PID namespace a container sees only its own processes.
func TestPIDNamespacePerContainer(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 3*time.Minute)
		cri := shared.ctrd.CRI
		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: "pidns-" + h.name, LogDir: t.TempDir()}))
		if err != nil {
			t.Fatalf("RunPodSandbox: %v", err)
		}
		defer func() {
			if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
			assertNoLeftovers(t, pod.ID)
		}()
		if _, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("a", "a.log", "sleep", "1000")); err != nil {
			t.Fatal(err)
		}
		b, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("b", "b.log", "sleep", "1001"))
		if err != nil {
			t.Fatal(err)
		}
		out, _, code, err := cri.Exec(ctx, b, 30*time.Second, "ps", "-o", "args")
		if err != nil || code != 0 {
			t.Fatalf("ExecSync ps: code %d, err %v", code, err)
		}
		if strings.Contains(out, "sleep 1000") {
			t.Fatalf("container b sees container a's process without a shared PID namespace; ps:\n%s", out)
		}
		if !strings.Contains(out, "sleep 1001") {
			t.Fatalf("container b does not see its own process; ps:\n%s", out)
		}
	})
}

// waitFor polls cond until it holds or limit passes; the message of the last
// failed poll explains the failure.
func waitFor(t *testing.T, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", limit, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEmptyPod stops and removes a pod that never ran a container, as the
// kubelet does when a pod's first container cannot be created.
func TestEmptyPod(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 3*time.Minute)
		cri := shared.ctrd.CRI
		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: "empty-" + h.name, LogDir: t.TempDir()}))
		if err != nil {
			t.Fatalf("RunPodSandbox: %v", err)
		}
		if err := cri.RemovePod(ctx, pod.ID); err != nil {
			t.Fatal(err)
		}
		assertNoLeftovers(t, pod.ID)
	})
}
