//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
	"github.com/coco-runtime/coco/sandbox"
)

// Canceling RunPodSandbox at points of the start that the test holds the
// pod at, rather than at a deadline that usually falls there: the VMM's
// exec is held by a wrapper that waits for a gate file, and the guest's
// setup is held by freezing QEMU once the shim has written that the agent
// answered (phases.json is written step by step). The wrapper logs its pid
// (QEMU's, once it execs) and argv, which names the pod's state directory.
const (
	handlerGated   = "coco-gated"
	handlerGatedSB = "coco-gated-sandboxer"
)

// gateDir holds the QEMU wrapper, its gate file and its log.
func gateDir() string { return filepath.Join(shared.failDir, "gate") }

// reliabilityHandlers registers the handlers of the reliability tests:
// gated (the QEMU wrapper), load (a boot timeout for a crowded machine) and
// small-run (its own run directory, a tiny tmpfs), each for the task API
// and the sandbox API.
func reliabilityHandlers(e *env) ([]harness.Handler, error) {
	gated, err := gatedHandlers(e)
	if err != nil {
		return nil, err
	}
	load, err := loadHandlers(e)
	if err != nil {
		return nil, err
	}
	small, err := smallRunHandler(e)
	if err != nil {
		return nil, err
	}
	return append(append(gated, load...), small), nil
}

// gatedHandlers registers the two gated handlers (task API, sandbox API).
func gatedHandlers(e *env) ([]harness.Handler, error) {
	dir := filepath.Join(e.failDir, "gate")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		qemu = "/usr/bin/qemu-system-x86_64" // the coco rows skip without it
	}
	wrapper := filepath.Join(dir, "qemu-gated")
	script := fmt.Sprintf("#!/bin/sh\n# Holds a pod's start at the QEMU exec until the gate file exists.\n"+
		"echo \"$$ $*\" >>%q\nwhile [ ! -e %q ]; do sleep 0.02; done\nexec %q \"$@\"\n",
		filepath.Join(dir, "log"), filepath.Join(dir, "open"), qemu)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		return nil, err
	}
	var hs []harness.Handler
	for name, sandboxer := range map[string]string{handlerGated: "", handlerGatedSB: "shim"} {
		// accel "tcg": accel "auto" would probe KVM through the wrapper.
		// The boot timeout bounds how long a shim whose caller is gone
		// waits for QEMU behind the closed gate.
		body := fmt.Sprintf("[hypervisor]\npath = %q\naccel = \"tcg\"\ninitrd = \"initrd-dev.img\"\ntools_image = \"tools.erofs\"\nboot_timeout = \"20s\"\n", wrapper)
		path := filepath.Join(e.failDir, name+".toml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			return nil, err
		}
		hs = append(hs, harness.CocoHandler(name, path, sandboxer))
	}
	return hs, nil
}

func setGate(t *testing.T, open bool) {
	t.Helper()
	p := filepath.Join(gateDir(), "open")
	if !open {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// errMissed: the start ran past the point before the test could hold it.
var errMissed = errors.New("the start went past the point")

// gated is the pod the wrapper was run for.
type gated struct {
	pid   int    // the wrapper, QEMU once it execs
	podID string // from the state directory in its argv
}

var podDirArg = regexp.MustCompile(harness.CocoRunDir + `/([0-9a-f]{64})/`)

// awaitWrapper waits for the wrapper's log line number n (from 1).
func awaitWrapper(n int) (gated, error) {
	var g gated
	err := poll(2*time.Minute, func() (bool, error) {
		b, _ := os.ReadFile(filepath.Join(gateDir(), "log"))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) == 0 || len(lines) < n {
			return false, nil
		}
		pid, args, _ := strings.Cut(lines[n-1], " ")
		m := podDirArg.FindStringSubmatch(args)
		if m == nil {
			return false, fmt.Errorf("the QEMU wrapper's argv names no pod directory: %s", args)
		}
		g.podID = m[1]
		var err error
		g.pid, err = strconv.Atoi(pid)
		return true, err
	})
	return g, err
}

func wrapperRuns() int {
	b, _ := os.ReadFile(filepath.Join(gateDir(), "log"))
	return strings.Count(string(b), "\n")
}

// heldPoint is a point of the start and how the test reaches it: reach
// returns once the start is held there (errMissed if it went past), and
// what to undo after the cancel.
type heldPoint struct {
	name  string
	gate  bool // the gate is open (QEMU really runs)
	reach func(g gated) (undo func(), err error)
}

var heldPoints = []heldPoint{
	{name: "before-qemu-exec", reach: reachGatedExec},
	{name: "during-boot", gate: true, reach: reachBoot},
	{name: "during-setup", gate: true, reach: reachSetup},
}

// reachGatedExec: the shim has done everything before the VMM (state,
// network, vsock daemon) and execs the wrapper, which waits at the gate.
func reachGatedExec(g gated) (func(), error) {
	if c := harness.Cmdline(g.pid); !strings.Contains(c, "qemu-gated") {
		return nil, fmt.Errorf("pid %d is not the waiting wrapper: %q", g.pid, c)
	}
	return nil, nil
}

// reachBoot: QEMU runs and the agent has not answered yet (a TCG guest
// needs seconds to boot; the test sees QEMU within tens of milliseconds).
func reachBoot(g gated) (func(), error) {
	err := poll(time.Minute, func() (bool, error) {
		if !strings.Contains(strings.Fields(harness.Cmdline(g.pid) + " x")[0], "qemu-system") {
			return false, nil
		}
		if ph, ok := readPhases(g.podID); ok && ph.AgentUpAtNs != 0 {
			return false, errMissed
		}
		return true, nil
	})
	return nil, err
}

// reachSetup: the agent has answered; QEMU is frozen before the setup's
// answer is back, so the shim waits in SetupSandbox until the cancel.
func reachSetup(g gated) (func(), error) {
	err := poll(2*time.Minute, func() (bool, error) {
		ph, ok := readPhases(g.podID)
		if !ok || ph.AgentUpAtNs == 0 {
			return false, nil
		}
		return true, syscall.Kill(g.pid, syscall.SIGSTOP)
	})
	if err != nil {
		return nil, err
	}
	undo := func() { syscall.Kill(g.pid, syscall.SIGCONT) }
	// An answer already on its way lands within this; none can after.
	time.Sleep(300 * time.Millisecond)
	if ph, _ := readPhases(g.podID); ph.SetupDoneAtNs != 0 {
		return undo, errMissed
	}
	return undo, nil
}

// poll calls f every 5 ms until it is done or fails, or limit passes.
func poll(limit time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		done, err := f()
		if err != nil || done {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("not reached within %s", limit)
}

// readPhases reads a pod's phases.json.
func readPhases(podID string) (sandbox.Phases, bool) {
	var ph sandbox.Phases
	b, err := os.ReadFile(filepath.Join(harness.CocoRunDir, podID, sandbox.PhasesFile))
	if err != nil || json.Unmarshal(b, &ph) != nil {
		return ph, false
	}
	return ph, true
}

// TestCancelRunPodSandboxAtHeldPoints holds a pod's start before the QEMU
// exec, during the guest's boot and during SetupSandbox, cancels
// RunPodSandbox there (containerd gives up while the shim is mid-start, as
// on a client's cancel), and finds nothing of the pod left: no process
// naming it (wrapper, QEMU, vsock daemon, shim), no /run/coco/<id>, no
// containerd state, no shim socket, mount or bridge port beyond the census
// before, no pod in CRI's list.
func TestCancelRunPodSandboxAtHeldPoints(t *testing.T) {
	requireGuest(t)
	for _, handler := range []string{handlerGated, handlerGatedSB} {
		t.Run(handler, func(t *testing.T) {
			for _, p := range heldPoints {
				t.Run(p.name, func(t *testing.T) {
					for attempt := 1; ; attempt++ {
						err := cancelAtHeldPoint(t, handler, p)
						if err == nil {
							return
						}
						if !errors.Is(err, errMissed) || attempt == 3 {
							t.Fatalf("attempt %d: %v", attempt, err)
						}
						t.Logf("attempt %d: %v; again", attempt, err)
					}
				})
			}
		})
	}
}

func cancelAtHeldPoint(t *testing.T, handler string, p heldPoint) error {
	cri := shared.ctrd.CRI
	setGate(t, p.gate)
	defer setGate(t, true)
	before := shared.ctrd.Census()
	runs := wrapperRuns()
	name := "held-" + p.name
	// A deadline far off: the cancel, not the deadline, ends the call.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type result struct {
		pod *harness.Pod
		err error
	}
	done := make(chan result, 1)
	go func() {
		pod, err := cri.RunPod(ctx, handler, harness.PodConfig(harness.PodOptions{Name: name, LogDir: t.TempDir()}))
		done <- result{pod, err}
	}()
	g, reachErr := awaitWrapper(runs + 1)
	var undo func()
	if reachErr == nil {
		undo, reachErr = p.reach(g)
	}
	t0 := time.Now()
	cancel()
	r := <-done
	if undo != nil {
		undo()
	}
	if r.err == nil {
		// The start finished before the cancel: remove the pod properly.
		if err := cri.RemovePod(context.Background(), r.pod.ID); err != nil {
			t.Error(err)
		}
		if reachErr == nil {
			reachErr = errMissed
		}
	}
	if reachErr != nil && !errors.Is(reachErr, errMissed) {
		return reachErr
	}
	t.Logf("%s: pod %.12s canceled %s (held there: %v); RunPodSandbox returned %v", handler, g.podID, p.name, reachErr == nil, r.err)
	waitFor(t, censusSettle, func() (bool, string) {
		if left := shared.ctrd.Leftovers(g.podID); len(left) > 0 {
			return false, "left of the canceled pod: " + strings.Join(left, "; ")
		}
		return true, ""
	})
	t.Logf("%s: processes, state and sockets of the pod gone %s after the cancel", p.name, time.Since(t0).Round(time.Millisecond))
	assertCensusBack(t, before, "RunPodSandbox canceled "+p.name)
	lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer lcancel()
	list, err := cri.Runtime.ListPodSandbox(lctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range list.Items {
		if it.GetMetadata().GetName() == name {
			t.Errorf("pod %s (%s) still listed after a canceled start, state %s", it.Id, name, it.State)
			if err := cri.RemovePod(lctx, it.Id); err != nil {
				t.Errorf("removing the canceled pod %s: %v", it.Id, err)
			}
		}
	}
	return reachErr
}
