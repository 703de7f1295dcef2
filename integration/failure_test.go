//go:build integration

package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/guest-assets/initrd"
	"github.com/coco-runtime/coco/integration/harness"
	"github.com/coco-runtime/coco/sandbox"
)

// Handlers whose config file is broken on purpose, one per failure scenario.
const (
	handlerNoKernel = "coco-nokernel"
	handlerBadKey   = "coco-badkey"
	handlerSilent   = "coco-silent"
	// The lean initrd without the tools disk that carries crun.
	handlerNoTools = "coco-notools"
	// Not broken: the coco-dev class proposing the default TEE policy.
	handlerTEEPolicy = "coco-teepolicy"
	// The TEE initrd (marked TEE, measured) in a VM without a TEE, with the
	// host's tools disk attached: the guest must fail closed.
	handlerTEEGuest = "coco-teeguest"
)

// silentMarker is what the silent guest prints on its console; the CRI error
// must carry it as the console tail.
const silentMarker = "COCO-IT-SILENT-GUEST: booted, will never answer"

// silentBootTimeout is the boot deadline of the silent handler.
const silentBootTimeout = 15 * time.Second

// failureHandlers writes the broken configs into e.failDir and registers them.
func failureHandlers(e *env) ([]harness.Handler, error) {
	dir := e.failDir
	missingKernel := filepath.Join(dir, "no-such-dir", "vmlinux")
	silentInitrd := filepath.Join(dir, "silent-initrd.img")
	if err := writeSilentInitrd(silentInitrd); err != nil {
		return nil, err
	}
	configs := map[string]string{
		handlerNoKernel: fmt.Sprintf("[hypervisor]\nkernel = %q\n", missingKernel),
		handlerBadKey:   "[hypervisor]\nno_such_key = 1\n",
		handlerSilent:   fmt.Sprintf("[hypervisor]\ninitrd = %q\nboot_timeout = %q\n", silentInitrd, silentBootTimeout.String()),
		// The plain VM's initrd: initrd.img is the TEE guest's.
		handlerTEEPolicy: fmt.Sprintf("[hypervisor]\ninitrd = \"initrd-dev.img\"\ntools_image = \"tools.erofs\"\n[agent]\npolicy = %q\n",
			filepath.Join(e.repo, "configs", "policies", "default-tee.rego")),
		handlerNoTools:  "[hypervisor]\ninitrd = \"initrd-dev.img\"\ntools_image = \"\"\n",
		handlerTEEGuest: "[hypervisor]\ninitrd = \"initrd.img\"\ntools_image = \"tools.erofs\"\n",
		// Not a failure: the coco-dev class with guest pull, on the coco
		// snapshotter (see guestpull_test.go).
		// 256 MiB of guest memory and a 1 GiB scratch disk: an image
		// bigger than the memory's share must spill to the disk.
		handlerGuestPull: "[hypervisor]\ninitrd = \"initrd-dev.img\"\ntools_image = \"tools.erofs\"\nmemory_mib = 256\n[rootfs]\nguest_pull = true\nscratch_mib = 1024\n",
	}
	var hs []harness.Handler
	for name, body := range configs {
		path := filepath.Join(dir, name+".toml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			return nil, err
		}
		h := harness.CocoHandler(name, path, "")
		if name == handlerGuestPull {
			h.Snapshotter = harness.CocoSnapshotter
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// writeSilentInitrd is an initrd whose /init prints a marker on the console
// and sleeps: a guest that boots but never starts an agent.
func writeSilentInitrd(path string) error {
	bb, err := initrd.File("bin/busybox", "/bin/busybox", 0o755)
	if err != nil {
		return err
	}
	script := "#!/bin/busybox sh\n/bin/busybox echo '" + silentMarker + "' >/dev/console\nexec /bin/busybox sleep 100000\n"
	entries := []initrd.Entry{
		bb,
		initrd.Dir("dev", 0o755),
		initrd.CharDevice("dev/console", 0o600, 5, 1),
		{Path: "init", Mode: 0o755, Data: []byte(script)},
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := initrd.Write(f, entries, "none"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var sandboxIDInError = regexp.MustCompile(`failed to start sandbox \\?"([0-9a-f]{64})`)

// runFailingPod runs a pod under handler, expects RunPodSandbox to fail and
// returns the error text, after checking nothing of the attempt is left.
func runFailingPod(t *testing.T, handler string, limit time.Duration) (string, time.Duration) {
	t.Helper()
	requireCoco(t)
	if handler == handlerSilent {
		if _, err := os.Stat(filepath.Join(shared.guestDir, "vmlinux")); err != nil {
			t.Skipf("the silent guest boots the real kernel: %v (run `make kernel` or `make guest-assets`)", err)
		}
	}
	ctx := testCtx(t, limit)
	start := time.Now()
	pod, err := shared.ctrd.CRI.RunPod(ctx, handler, harness.PodConfig(harness.PodOptions{Name: "fail-" + handler, LogDir: t.TempDir()}))
	took := time.Since(start)
	if err == nil {
		shared.ctrd.CRI.RemovePod(context.Background(), pod.ID)
		t.Fatalf("RunPodSandbox with handler %s succeeded; want an error", handler)
	}
	// containerd names the sandbox it tried in the error; nothing of it may remain.
	if m := sandboxIDInError.FindStringSubmatch(err.Error()); m != nil {
		assertNoLeftovers(t, m[1])
	} else {
		t.Errorf("CRI error does not name the failed sandbox: %v", err)
	}
	return err.Error(), took
}

// TestMissingGuestKernel: the error names the missing file and the fix.
func TestMissingGuestKernel(t *testing.T) {
	msg, _ := runFailingPod(t, handlerNoKernel, 2*time.Minute)
	for _, want := range []string{filepath.Join(shared.failDir, "no-such-dir", "vmlinux"), "make guest-assets"} {
		if !strings.Contains(msg, want) {
			t.Errorf("CRI error does not name %q:\n%s", want, msg)
		}
	}
}

// TestUnknownConfigKey: the error names the key (a typo must not be ignored).
func TestUnknownConfigKey(t *testing.T) {
	msg, _ := runFailingPod(t, handlerBadKey, 2*time.Minute)
	if !strings.Contains(msg, "no_such_key") {
		t.Errorf("CRI error does not name the unknown key no_such_key:\n%s", msg)
	}
}

// TestGuestNeverAnswers: a guest that boots but never serves the agent port
// fails the pod at the configured deadline, with the console's last words.
func TestGuestNeverAnswers(t *testing.T) {
	msg, took := runFailingPod(t, handlerSilent, silentBootTimeout+90*time.Second)
	if !strings.Contains(msg, silentMarker) {
		t.Errorf("CRI error lacks the console tail (marker %q):\n%s", silentMarker, msg)
	}
	// The configured value ("15s") or the elapsed time at it ("15.001s").
	deadline := regexp.MustCompile(`\b` + strings.TrimSuffix(silentBootTimeout.String(), "s") + `(\.\d+)?s\b`)
	if !deadline.MatchString(msg) {
		t.Errorf("CRI error does not name the %s deadline:\n%s", silentBootTimeout, msg)
	}
	if took < silentBootTimeout {
		t.Errorf("RunPodSandbox failed after %s, before the %s deadline", took, silentBootTimeout)
	}
}

// TestTEEGuestWithoutReportRefuses: the TEE initrd booted where the guest
// has no attestation report (no TEE here, as a host hiding the TEE device
// would arrange) fails closed: the agent is in TEE mode because its
// measured initrd says so, and refuses the sandbox, saying why, in the CRI
// error; the VM and everything of the pod are gone.
func TestTEEGuestWithoutReportRefuses(t *testing.T) {
	msg, _ := runFailingPod(t, handlerTEEGuest, 3*time.Minute)
	for _, want := range []string{"TEE guest", "/etc/coco/tee", "cannot read its own attestation report", "refuses to run containers",
		// From the guest console the error quotes: TEE mode took the
		// default TEE policy and leaves the host's tools disk alone.
		"default TEE policy, no tools disk"} {
		if !strings.Contains(msg, want) {
			t.Errorf("CRI error does not say %q:\n%s", want, msg)
		}
	}
}

// TestContainerWithoutRuntime: a guest booted from the lean initrd without the
// tools disk runs the pod (the pause process needs no crun) but refuses a
// container with an error that names what is missing and the fix; removal
// cleans up.
func TestContainerWithoutRuntime(t *testing.T) {
	requireCoco(t)
	ctx := testCtx(t, 3*time.Minute)
	cri := shared.ctrd.CRI
	pod, err := cri.RunPod(ctx, handlerNoTools, harness.PodConfig(harness.PodOptions{Name: "notools", LogDir: t.TempDir()}))
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	_, err = cri.StartContainer(ctx, pod, harness.ContainerConfig("c", "c.log", "true"))
	if err == nil {
		t.Errorf("a container started without crun in the guest")
	} else {
		t.Logf("refused as it should be: %v", err)
		for _, want := range []string{"crun", "initrd.img", "hypervisor.tools_image"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %q: %v", want, err)
			}
		}
	}
	if err := cri.RemovePod(ctx, pod.ID); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, pod.ID)
}

// TestQEMUKilled: the VM dies under a running pod. Its containers must exit
// with a reason, containerd must see TaskExit (before any delete), the pod
// must go NotReady, and removal must clean up (census back).
func TestQEMUKilled(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		if !h.coco {
			t.Skip("no VM under runc")
		}
		ctx := testCtx(t, 4*time.Minute)
		cri := shared.ctrd.CRI
		events := watchEvents(t)
		before := shared.ctrd.Census()
		pod, ctr, removed := sleepingPod(t, ctx, h.name, "qkill-"+h.name)
		if err := syscall.Kill(podQEMU(t, pod.ID), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		st, err := cri.WaitExited(ctx, ctr, time.Minute)
		if err != nil {
			t.Fatalf("container after QEMU was killed: %v", err)
		}
		if st.Reason == "" && st.Message == "" {
			t.Errorf("container exited (code %d) without a reason or message", st.ExitCode)
		}
		if st.ExitCode == 0 {
			t.Errorf("container exit code 0 after its VM was killed")
		}
		waitFor(t, 30*time.Second, func() (bool, string) {
			return events.has("/tasks/exit", ctr), "no /tasks/exit event for " + ctr + "; events:\n" + events.String()
		})
		waitFor(t, time.Minute, func() (bool, string) {
			ps, err := cri.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.ID})
			if err != nil {
				return false, err.Error()
			}
			return ps.Status.State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY, "pod after its VM was killed: " + ps.Status.State.String()
		})
		if err := cri.RemovePod(ctx, pod.ID); err != nil {
			t.Fatal(err)
		}
		*removed = true
		assertNoLeftovers(t, pod.ID, ctr)
		if bad := exitBeforeDelete(events.String()); len(bad) > 0 {
			t.Errorf("containerd's events: %s", strings.Join(bad, "; "))
		}
		assertCensusBack(t, before, "QEMU killed")
	})
}

// TestHungGuest: the VM stops answering (QEMU frozen with SIGSTOP). A guest
// call that runs out of time makes the shim probe the agent; no answer within
// sandbox.GuestProbeTimeout stops the VM, so the pod can still be stopped and
// removed, and nothing is left behind.
func TestHungGuest(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		if !h.coco {
			t.Skip("no VM under runc")
		}
		ctx := testCtx(t, 4*time.Minute)
		cri := shared.ctrd.CRI
		pod, ctr, removed := sleepingPod(t, ctx, h.name, "hung-"+h.name)
		qemu := podQEMU(t, pod.ID)
		if err := syscall.Kill(qemu, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(qemu, syscall.SIGCONT) // if the shim left it frozen
		// Removal fails while the guest is given its chance to answer; once
		// the shim has stopped the VM, a retry (as the kubelet's) succeeds.
		start := time.Now()
		limit := sandbox.GuestKillTimeout + sandbox.GuestProbeTimeout + time.Minute
		for {
			err := cri.RemovePod(ctx, pod.ID)
			if err == nil {
				break
			}
			if time.Since(start) > limit {
				t.Fatalf("removing a pod whose VM hung, still failing after %s: %v", limit, err)
			}
			t.Logf("removal after %s: %v", time.Since(start).Round(time.Second), err)
			time.Sleep(2 * time.Second)
		}
		*removed = true
		t.Logf("removed %s after the VM froze", time.Since(start).Round(time.Second))
		assertNoLeftovers(t, pod.ID, ctr)
	})
}

// sleepingPod runs a pod of handler with one container that sleeps. The
// pod is removed at the end of the test unless the test sets *removed.
func sleepingPod(t *testing.T, ctx context.Context, handler, name string) (pod *harness.Pod, ctr string, removed *bool) {
	t.Helper()
	cri := shared.ctrd.CRI
	pod, err := cri.RunPod(ctx, handler, harness.PodConfig(harness.PodOptions{Name: name, LogDir: t.TempDir()}))
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	removed = new(bool)
	t.Cleanup(func() {
		if !*removed {
			cri.RemovePod(context.Background(), pod.ID)
		}
	})
	ctr, err = cri.StartContainer(ctx, pod, harness.ContainerConfig("sleeper", "sleeper.log", "sleep", "1000"))
	if err != nil {
		t.Fatal(err)
	}
	return pod, ctr, removed
}

// podQEMU is the pid of the one QEMU process that names the pod in its argv.
func podQEMU(t *testing.T, podID string) int {
	t.Helper()
	var qemu []int
	for _, pid := range harness.ProcessesMentioning(podID) {
		if strings.Contains(harness.Cmdline(pid), "qemu-system") {
			qemu = append(qemu, pid)
		}
	}
	if len(qemu) != 1 {
		t.Fatalf("want exactly one QEMU naming pod %s in its argv, found %v", podID, qemu)
	}
	return qemu[0]
}

// eventLog collects `ctr events` output: containerd's event stream, where
// the shim's TaskExit lands as topic /tasks/exit.
type eventLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *eventLog) has(topic, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, topic) && strings.Contains(line, id) {
			return true
		}
	}
	return false
}

func (l *eventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func watchEvents(t *testing.T) *eventLog {
	t.Helper()
	cmd := exec.Command(shared.bins.Ctr, "--address", shared.ctrd.Address, "events")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &eventLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-done; cmd.Wait() })
	return l
}
