//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
	"github.com/coco-runtime/coco/sandbox"
)

// Reliability under cancels and faults (issue 27): whatever happens to a
// request, a shim or containerd, nothing of a pod may outlive its removal.
// Each check compares a census of the instance (processes, pod state
// directories, mounts, shim sockets, bridge ports, loop devices, fds)
// before and after.

// censusSettle is how long containerd and the shims get to finish their
// asynchronous cleanup (shim exit, `delete`, CNI teardown) before what is
// left counts as a leak; it covers a shim given up on during its `start`
// (it exits a minute after it started without a pod).
const censusSettle = 75 * time.Second

// assertCensusBack waits until nothing has grown since before.
func assertCensusBack(t *testing.T, before harness.Census, what string) harness.Census {
	t.Helper()
	var grown []string
	var after harness.Census
	deadline := time.Now().Add(censusSettle)
	for {
		after = shared.ctrd.Census()
		if grown = before.Grown(after, 8); len(grown) == 0 {
			t.Logf("%s: before: %s", what, before)
			t.Logf("%s: after:  %s", what, after)
			return after
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("%s: left behind after %s:\n  %s\nbefore: %s\nafter:  %s", what, censusSettle, strings.Join(grown, "\n  "), before, after)
	return after
}

// cancelPoint is a deadline on RunPodSandbox, taken from the phases of a
// pod started to completion in the same run (the machine's speed varies
// several-fold under load).
type cancelPoint struct {
	name     string
	deadline func(p podTimes) time.Duration
}

// podTimes are the moments of a complete pod start, from the CRI call.
type podTimes struct {
	vmExec, agentUp, setupDone time.Duration
}

var cancelPoints = []cancelPoint{
	// The pod's shim runs; QEMU has not been executed yet.
	{name: "before-qemu", deadline: func(p podTimes) time.Duration { return p.vmExec / 2 }},
	// QEMU runs and the guest kernel boots.
	{name: "during-boot", deadline: func(p podTimes) time.Duration { return (p.vmExec + p.agentUp) / 2 }},
	// The agent answers: the shim subscribes to events and runs SetupSandbox.
	{name: "during-setup", deadline: func(p podTimes) time.Duration { return (p.agentUp + p.setupDone) / 2 }},
}

// calibratePodStart starts one pod to completion and reads its phases.
func calibratePodStart(t *testing.T, handler string) podTimes {
	t.Helper()
	cri := shared.ctrd.CRI
	ctx := testCtx(t, 3*time.Minute)
	t0 := time.Now()
	pod, err := cri.RunPod(ctx, handler, harness.PodConfig(harness.PodOptions{Name: "calibrate", LogDir: t.TempDir()}))
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	defer func() {
		if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
			t.Error(err)
		}
	}()
	b, err := os.ReadFile(filepath.Join(harness.CocoRunDir, pod.ID, sandbox.PhasesFile))
	if err != nil {
		t.Fatal(err)
	}
	var ph sandbox.Phases
	if err := json.Unmarshal(b, &ph); err != nil {
		t.Fatal(err)
	}
	at := func(ns int64) time.Duration { return time.Unix(0, ns).Sub(t0) }
	pt := podTimes{vmExec: at(ph.VMExecAtNs), agentUp: at(ph.AgentUpAtNs), setupDone: at(ph.SetupDoneAtNs)}
	t.Logf("%s pod start: QEMU exec at %s, agent up at %s, set up at %s, RunPodSandbox returned at %s",
		handler, pt.vmExec.Round(time.Millisecond), pt.agentUp.Round(time.Millisecond), pt.setupDone.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	return pt
}

// TestCanceledRunPodSandboxLeavesNothing gives RunPodSandbox a deadline, as
// crictl's 2 s default timeout or a kubelet's runtime request timeout does,
// that ends at points of the pod's start, under both sandboxers, and finds
// nothing of the pod left once containerd has given up on it: no shim,
// QEMU, vhost-device-vsock, socket, state directory, mount or bridge port,
// and no pod in CRI's list.
func TestCanceledRunPodSandboxLeavesNothing(t *testing.T) {
	requireGuest(t)
	for _, handler := range []string{"coco", "coco-sandboxer"} {
		t.Run(handler, func(t *testing.T) {
			times := calibratePodStart(t, handler)
			for _, cp := range cancelPoints {
				t.Run(cp.name, func(t *testing.T) {
					cancelRunPod(t, handler, cp.name, cp.deadline(times))
				})
			}
		})
	}
}

func cancelRunPod(t *testing.T, handler, point string, deadline time.Duration) {
	cri := shared.ctrd.CRI
	before := shared.ctrd.Census()
	name := "cancel-" + point
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	pod, err := cri.RunPod(ctx, handler, harness.PodConfig(harness.PodOptions{Name: name, LogDir: t.TempDir()}))
	took := time.Since(start)
	if err == nil {
		// The start beat the deadline: still a pod to remove cleanly.
		t.Logf("RunPodSandbox finished in %s, within the %s deadline (%s); removing the pod", took, deadline, point)
		if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
			t.Fatal(err)
		}
	} else {
		if c := status.Code(err); c != codes.DeadlineExceeded && c != codes.Canceled {
			t.Errorf("RunPodSandbox with a %s deadline: got %v, want DeadlineExceeded", deadline, err)
		}
		t.Logf("deadline %s (%s): returned after %s: %v", deadline.Round(time.Millisecond), point, took.Round(time.Millisecond), err)
	}
	assertCensusBack(t, before, "RunPodSandbox past its deadline "+point)
	// containerd must not keep the failed pod in its list either.
	lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer lcancel()
	list, err := cri.Runtime.ListPodSandbox(lctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		if p.GetMetadata().GetName() == name {
			t.Errorf("pod %s (%s) still listed after RunPodSandbox ran out of time, state %s", p.Id, name, p.State)
			cri.RemovePod(context.Background(), p.Id)
		}
	}
}

// TestCanceledContainerCallsLeaveNothing cancels CreateContainer and
// StartContainer on a running pod at several delays: the pod stays usable
// (a later container starts and ExecSync works), and once the pod is removed
// nothing is left.
func TestCanceledContainerCallsLeaveNothing(t *testing.T) {
	requireGuest(t)
	for _, handler := range []string{"coco", "coco-sandboxer"} {
		t.Run(handler, func(t *testing.T) {
			cri := shared.ctrd.CRI
			before := shared.ctrd.Census()
			ctx := testCtx(t, 4*time.Minute)
			pod, err := cri.RunPod(ctx, handler, harness.PodConfig(harness.PodOptions{Name: "cancel-ctr", LogDir: t.TempDir()}))
			if err != nil {
				t.Fatalf("RunPodSandbox: %v", err)
			}
			removed := false
			defer func() {
				if !removed {
					cri.RemovePod(context.Background(), pod.ID)
				}
			}()
			for i, d := range []time.Duration{20 * time.Millisecond, 150 * time.Millisecond, 400 * time.Millisecond} {
				cctx, cancel := context.WithTimeout(ctx, d)
				cfg := harness.ContainerConfig(fmt.Sprintf("c%d", i), fmt.Sprintf("c%d.log", i), "sleep", "1000")
				id, err := cri.StartContainer(cctx, pod, cfg)
				cancel()
				t.Logf("CreateContainer+StartContainer canceled after %s: id %q, err %v", d, id, err)
				if id != "" {
					// What the kubelet does with a container it could not
					// start: remove it.
					// containerd finishes the start in the background
					// ("container is in starting state"): retry, as the
					// kubelet's sync loop does.
					rctx, rcancel := context.WithTimeout(ctx, time.Minute)
					for {
						cri.Runtime.StopContainer(rctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1})
						_, err := cri.Runtime.RemoveContainer(rctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
						if err == nil {
							break
						}
						if rctx.Err() != nil {
							t.Errorf("RemoveContainer %s after a canceled start: %v", id, err)
							break
						}
						time.Sleep(500 * time.Millisecond)
					}
					rcancel()
				}
			}
			// The pod still works.
			ctr, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("after", "after.log", "sleep", "1000"))
			if err != nil {
				for _, l := range shared.ctrd.Warnings(pod.ID, 30) {
					t.Log(l)
				}
				t.Fatalf("a container after the canceled ones: %v", err)
			}
			if out, _, code, err := cri.Exec(ctx, ctr, 30*time.Second, "echo", "alive"); err != nil || code != 0 || strings.TrimSpace(out) != "alive" {
				t.Errorf("ExecSync after the canceled calls: %q, code %d, %v", out, code, err)
			}
			if err := rootfsImagesOnly(pod.ID, ctr); err != nil {
				t.Error(err)
			}
			if err := cri.RemovePod(ctx, pod.ID); err != nil {
				t.Fatal(err)
			}
			removed = true
			assertNoLeftovers(t, pod.ID, ctr)
			assertCensusBack(t, before, "canceled container calls")
		})
	}
}

// rootfsImagesOnly checks the pod's host rootfs images are those of the
// live containers: a canceled CreateContainer must not leave its image.
func rootfsImagesOnly(podID string, live ...string) error {
	entries, _ := os.ReadDir(filepath.Join(harness.CocoRunDir, podID, "rootfs"))
	want := map[string]bool{}
	for _, id := range live {
		want[id+".erofs"] = true
	}
	var extra []string
	for _, e := range entries {
		if !want[e.Name()] {
			extra = append(extra, e.Name())
		}
	}
	if len(extra) > 0 {
		return fmt.Errorf("rootfs images of containers that are gone: %v", extra)
	}
	return nil
}

// TestContainerdRestartThenShimKilled runs one pod per sandboxer through two
// faults. containerd restarted (SIGTERM, then started again, as for an
// upgrade): the shim keeps the pod, and the new containerd sees it Ready,
// its container Running, and ExecSync works. Then the shim is killed -9:
// the VM and its vsock daemon die with it (they are tethered to the shim),
// containerd's `delete` removes the pod's state, the container shows as
// exited, and the pod is removed with nothing left.
func TestContainerdRestartThenShimKilled(t *testing.T) {
	requireGuest(t)
	for _, handler := range []string{"coco", "coco-sandboxer"} {
		t.Run(handler, func(t *testing.T) {
			ctx := testCtx(t, 5*time.Minute)
			before := shared.ctrd.Census()
			pod, err := shared.ctrd.CRI.RunPod(ctx, handler, harness.PodConfig(harness.PodOptions{Name: "restart-" + handler, LogDir: t.TempDir()}))
			if err != nil {
				t.Fatalf("RunPodSandbox: %v", err)
			}
			removed := false
			defer func() {
				if !removed && shared.ctrd.CRI != nil {
					shared.ctrd.CRI.RemovePod(context.Background(), pod.ID)
				}
			}()
			ctr, err := shared.ctrd.CRI.StartContainer(ctx, pod, harness.ContainerConfig("sleeper", "sleeper.log", "sleep", "1000"))
			if err != nil {
				t.Fatal(err)
			}
			qemu := podQEMU(t, pod.ID)
			shimPID := podShim(t, pod.ID)

			// containerd restarts under the running pod.
			t0 := time.Now()
			if err := shared.ctrd.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("containerd restarted in %s", time.Since(t0).Round(time.Millisecond))
			cri := shared.ctrd.CRI
			if p := podShim(t, pod.ID); p != shimPID {
				t.Errorf("the pod's shim changed across the restart: %d → %d", shimPID, p)
			}
			if q := podQEMU(t, pod.ID); q != qemu {
				t.Errorf("the pod's QEMU changed across the restart: %d → %d", qemu, q)
			}
			ps, err := cri.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.ID})
			if err != nil {
				t.Fatalf("PodSandboxStatus after the restart: %v", err)
			}
			if ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("pod after containerd's restart: %s, want SANDBOX_READY", ps.Status.State)
			}
			cs, err := cri.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr})
			if err != nil {
				t.Fatalf("ContainerStatus after the restart: %v", err)
			}
			if cs.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Errorf("container after containerd's restart: %s, want CONTAINER_RUNNING", cs.Status.State)
			}
			if out, _, code, err := cri.Exec(ctx, ctr, 30*time.Second, "echo", "after-restart"); err != nil || code != 0 || strings.TrimSpace(out) != "after-restart" {
				t.Errorf("ExecSync after containerd's restart: %q, code %d, %v", out, code, err)
			}

			// The shim dies by SIGKILL: nothing of its may run on.
			if err := syscall.Kill(shimPID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, func() (bool, string) {
				for _, pid := range harness.ProcessesMentioning(pod.ID) {
					if c := harness.Cmdline(pid); strings.Contains(c, "qemu-system") || strings.Contains(c, "vhost-device-vsock") {
						return false, fmt.Sprintf("process %d outlived the shim killed -9: %s", pid, c)
					}
				}
				return true, ""
			})
			st, err := cri.WaitExited(ctx, ctr, time.Minute)
			if err != nil {
				t.Fatalf("container after its shim was killed: %v", err)
			}
			t.Logf("container after the shim was killed: exit %d, reason %q", st.ExitCode, st.Reason)
			if err := cri.RemovePod(ctx, pod.ID); err != nil {
				t.Fatalf("removing the pod of a killed shim: %v", err)
			}
			removed = true
			assertNoLeftovers(t, pod.ID, ctr)
			assertCensusBack(t, before, "containerd restart, then shim killed -9")
		})
	}
}

// podShim is the pid of the shim serving pod id (its argv: -id <id>).
func podShim(t *testing.T, podID string) int {
	t.Helper()
	var shims []int
	for _, pid := range harness.ProcessesMentioning("-id " + podID) {
		if strings.Contains(harness.Cmdline(pid), "containerd-shim-coco-v2") {
			shims = append(shims, pid)
		}
	}
	if len(shims) != 1 {
		t.Fatalf("want exactly one shim serving pod %s, found %v", podID, shims)
	}
	return shims[0]
}
