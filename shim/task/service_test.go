package task

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runtimeopts "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/sandbox/sandboxtest"
	"github.com/coco-runtime/coco/shim/options"
)

const (
	tCreate      = "/tasks/create"
	tStart       = "/tasks/start"
	tExit        = "/tasks/exit"
	tDelete      = "/tasks/delete"
	tExecAdded   = "/tasks/exec-added"
	tExecStarted = "/tasks/exec-started"
	tPaused      = "/tasks/paused"
	tResumed     = "/tasks/resumed"
	tOOM         = "/tasks/oom"
)

// A pod's whole life through the task API in podsandbox mode: the sandbox
// container boots the VM, a workload prints to a log file, exits, is
// deleted; every guest event is published in the guest's order, rewritten
// to host bundles and the VMM's pid.
func TestPodLifecycleEventsInOrder(t *testing.T) {
	h := newHarness(t)
	h.bootPod("pod1")
	uri, logPath := h.logFile("app.log")
	b := h.bundle("app", containerAnnotations("pod1"), "echo", "hello", "world")
	cr, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: b, Stdout: uri, Stderr: uri})
	if err != nil {
		t.Fatal(err)
	}
	vmm := uint32(h.factory.PID)
	if cr.Pid != vmm {
		t.Fatalf("Create pid %d, want the VMM pid %d", cr.Pid, vmm)
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	wr, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "app"})
	if err != nil || wr.ExitStatus != 0 {
		t.Fatalf("Wait = %v, %v; want exit 0", wr, err)
	}
	st, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != task.Status_STOPPED || st.Bundle != b || st.Pid != vmm || st.Stdout != uri {
		t.Fatalf("State = %+v; want stopped, host bundle %s, pid %d, stdout %s", st, b, vmm, uri)
	}
	if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(logPath)
	if err != nil || string(out) != "hello world\n" {
		t.Fatalf("log file = %q, %v; want the process output", out, err)
	}
	evs := h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tExit, tDelete)
	create := evs[2].(*eventstypes.TaskCreate)
	if create.ContainerID != "app" || create.Bundle != b || create.Pid != vmm || create.IO.GetStdout() != uri {
		t.Fatalf("TaskCreate not in host terms: %+v", create)
	}
	if e := exitOf(t, evs[4]); e.ID != "app" || e.Pid != vmm {
		t.Fatalf("TaskExit %+v; want id app, pid %d", e, vmm)
	}
	if _, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "app"}); !errdefs.IsNotFound(errNative(err)) {
		t.Fatalf("State after Delete: %v, want NotFound", err)
	}
}

// The host table answers NotFound / AlreadyExists / FailedPrecondition
// itself: none of these requests reaches the guest.
func TestHostSideErrorCodes(t *testing.T) {
	h := newHarness(t)
	bApp := h.bundle("app", containerAnnotations("pod1"), "sleep")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: bApp}); !isPrecondition(errNative(err)) {
		t.Fatalf("workload before its pod: %v, want FailedPrecondition", err)
	}
	h.bootPod("pod1")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: bApp}); err != nil {
		t.Fatal(err)
	}
	bDone := h.bundle("done", containerAnnotations("pod1"), "exit", "3")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "done", Bundle: bDone}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "done"}); err != nil {
		t.Fatal(err)
	}
	if wr, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "done"}); err != nil || wr.ExitStatus != 3 {
		t.Fatalf("Wait done = %v, %v; want 3", wr, err)
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "app", ExecID: "e1", Spec: procSpec(t, "sleep")}); err != nil {
		t.Fatal(err)
	}

	other := h.bundle("stray", containerAnnotations("pod2"), "sleep")
	before := h.fake().GuestCalls()
	ctx := h.ctx
	cases := []struct {
		name  string
		call  func() error
		is    func(error) bool
		class string
	}{
		{"Create duplicate", func() error {
			_, err := h.svc.Create(ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: bApp})
			return err
		}, isExists, "AlreadyExists"},
		{"Create in another pod", func() error {
			_, err := h.svc.Create(ctx, &taskAPI.CreateTaskRequest{ID: "stray", Bundle: other})
			return err
		}, isPrecondition, "FailedPrecondition"},
		{"Start twice", func() error { _, err := h.svc.Start(ctx, &taskAPI.StartRequest{ID: "app"}); return err }, isPrecondition, "FailedPrecondition"},
		{"Start stopped", func() error { _, err := h.svc.Start(ctx, &taskAPI.StartRequest{ID: "done"}); return err }, isPrecondition, "FailedPrecondition"},
		{"Start unknown", func() error { _, err := h.svc.Start(ctx, &taskAPI.StartRequest{ID: "nope"}); return err }, isNotFound, "NotFound"},
		{"Start unknown exec", func() error { _, err := h.svc.Start(ctx, &taskAPI.StartRequest{ID: "app", ExecID: "nope"}); return err }, isNotFound, "NotFound"},
		{"Exec duplicate", func() error {
			_, err := h.svc.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "app", ExecID: "e1", Spec: procSpec(t, "sleep")})
			return err
		}, isExists, "AlreadyExists"},
		{"Exec in stopped container", func() error {
			_, err := h.svc.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "done", ExecID: "e2", Spec: procSpec(t, "sleep")})
			return err
		}, isPrecondition, "FailedPrecondition"},
		{"Exec in unknown container", func() error {
			_, err := h.svc.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "nope", ExecID: "e3"})
			return err
		}, isNotFound, "NotFound"},
		{"Delete running", func() error { _, err := h.svc.Delete(ctx, &taskAPI.DeleteRequest{ID: "app"}); return err }, isPrecondition, "FailedPrecondition"},
		{"Delete unknown", func() error { _, err := h.svc.Delete(ctx, &taskAPI.DeleteRequest{ID: "nope"}); return err }, isNotFound, "NotFound"},
		{"Pause stopped", func() error { _, err := h.svc.Pause(ctx, &taskAPI.PauseRequest{ID: "done"}); return err }, isPrecondition, "FailedPrecondition"},
		{"Resume running", func() error { _, err := h.svc.Resume(ctx, &taskAPI.ResumeRequest{ID: "app"}); return err }, isPrecondition, "FailedPrecondition"},
		{"State unknown", func() error { _, err := h.svc.State(ctx, &taskAPI.StateRequest{ID: "nope"}); return err }, isNotFound, "NotFound"},
		{"Wait unknown", func() error { _, err := h.svc.Wait(ctx, &taskAPI.WaitRequest{ID: "nope"}); return err }, isNotFound, "NotFound"},
		{"Kill unknown", func() error { _, err := h.svc.Kill(ctx, &taskAPI.KillRequest{ID: "nope", Signal: 9}); return err }, isNotFound, "NotFound"},
		{"Pids unknown", func() error { _, err := h.svc.Pids(ctx, &taskAPI.PidsRequest{ID: "nope"}); return err }, isNotFound, "NotFound"},
		{"CloseIO unknown", func() error {
			_, err := h.svc.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "nope", Stdin: true})
			return err
		}, isNotFound, "NotFound"},
		{"ResizePty unknown", func() error {
			_, err := h.svc.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "app", ExecID: "nope"})
			return err
		}, isNotFound, "NotFound"},
		{"Update unknown", func() error { _, err := h.svc.Update(ctx, &taskAPI.UpdateTaskRequest{ID: "nope"}); return err }, isNotFound, "NotFound"},
		{"Stats unknown", func() error { _, err := h.svc.Stats(ctx, &taskAPI.StatsRequest{ID: "nope"}); return err }, isNotFound, "NotFound"},
		{"Checkpoint", func() error { _, err := h.svc.Checkpoint(ctx, &taskAPI.CheckpointTaskRequest{ID: "app"}); return err }, errdefs.IsNotImplemented, "NotImplemented"},
		{"Create from checkpoint", func() error {
			_, err := h.svc.Create(ctx, &taskAPI.CreateTaskRequest{ID: "restored", Bundle: bApp, Checkpoint: "/var/lib/cp"})
			return err
		}, errdefs.IsNotImplemented, "NotImplemented"},
	}
	for _, c := range cases {
		wantCode(t, c.name, errNative(c.call()), c.is, c.class)
	}
	if after := h.fake().GuestCalls(); after != before {
		t.Fatalf("host-side refusals reached the guest: %d guest calls", after-before)
	}
	_, err := h.svc.Checkpoint(ctx, &taskAPI.CheckpointTaskRequest{ID: "app"})
	if !strings.Contains(err.Error(), "confidential VM") {
		t.Fatalf("Checkpoint error does not say why: %v", err)
	}
}

// Errors the guest raises keep their errdefs class on the way to containerd.
func TestGuestErrorsKeepTheirClass(t *testing.T) {
	h := newHarness(t)
	h.bootPod("pod1")
	b := h.bundle("app", containerAnnotations("pod1"), "sleep")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: b}); err != nil {
		t.Fatal(err)
	}
	// Not a terminal process: the fake guest refuses with FailedPrecondition.
	_, err := h.svc.ResizePty(h.ctx, &taskAPI.ResizePtyRequest{ID: "app", Width: 80, Height: 24})
	wantCode(t, "ResizePty without terminal", errNative(err), isPrecondition, "FailedPrecondition")
}

// CloseIO ends stdin after the bytes already written, like runc's shim:
// `cat` sees EOF, exits 0, and its output has everything it was sent.
func TestExecStdinCloseIO(t *testing.T) {
	h := newHarness(t)
	h.bootPod("pod1")
	b := h.bundle("app", containerAnnotations("pod1"), "sleep")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	stdin := filepath.Join(h.dir, "stdin")
	if err := unix.Mkfifo(stdin, 0o600); err != nil {
		t.Fatal(err)
	}
	uri, logPath := h.logFile("exec.log")
	if _, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "app", ExecID: "cat", Stdin: stdin, Stdout: uri, Spec: procSpec(t, "cat")}); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(stdin, os.O_WRONLY, 0) // containerd's end; kept open
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "app", ExecID: "cat"}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	// Let the copy pick the bytes up before stdin is closed.
	waitFile(t, logPath, "ping\n")
	if _, err := h.svc.CloseIO(h.ctx, &taskAPI.CloseIORequest{ID: "app", ExecID: "cat", Stdin: true}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	wr, err := h.svc.Wait(ctx, &taskAPI.WaitRequest{ID: "app", ExecID: "cat"})
	if err != nil || wr.ExitStatus != 0 {
		t.Fatalf("cat after CloseIO: %v, %v; want exit 0", wr, err)
	}
	if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "app", ExecID: "cat"}); err != nil {
		t.Fatal(err)
	}
	h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tExecAdded, tExecStarted, tExit)
}

// When the VM dies, every process exits (execs before their init, as the
// guest orders them), Wait returns for all, and Delete works without a guest.
func TestVMCrashExitsEverything(t *testing.T) {
	h := newHarness(t)
	h.bootPod("pod1")
	b := h.bundle("app", containerAnnotations("pod1"), "sleep")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "app", ExecID: "e1", Spec: procSpec(t, "sleep")}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "app", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	waits := make(chan *taskAPI.WaitResponse, 2)
	for _, exec := range []string{"", "e1"} {
		go func() {
			wr, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "app", ExecID: exec})
			if err != nil {
				t.Error(err)
			}
			waits <- wr
		}()
	}
	h.fake().Crash("qemu killed")
	for range 2 {
		select {
		case wr := <-waits:
			if wr == nil || wr.ExitStatus != 137 {
				t.Fatalf("Wait after crash = %v; want 137", wr)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Wait did not return after the VM died")
		}
	}
	evs := h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tExecAdded, tExecStarted, tExit, tExit, tExit)
	// Within the pod the exec exits before its container's init.
	var order []string
	for _, ev := range evs[6:] {
		e := exitOf(t, ev)
		order = append(order, e.ContainerID+"/"+e.ID)
	}
	if ie, ia := indexOf(order, "app/e1"), indexOf(order, "app/app"); ie < 0 || ia < 0 || ie > ia {
		t.Fatalf("exit order %v: exec must exit before init", order)
	}
	dr, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "app"})
	if err != nil || dr.ExitStatus != 137 {
		t.Fatalf("Delete after crash = %v, %v; want 137", dr, err)
	}
	if _, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "pod1", ExecID: "e9"}); !isPrecondition(errNative(err)) {
		t.Fatalf("Exec in a dead pod: %v, want FailedPrecondition", err)
	}
}

func TestPauseResumeAndOOMEvents(t *testing.T) {
	h := newHarness(t)
	h.bootPod("pod1")
	if _, err := h.svc.Pause(h.ctx, &taskAPI.PauseRequest{ID: "pod1"}); err != nil {
		t.Fatal(err)
	}
	st, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "pod1"})
	if err != nil || st.Status != task.Status_PAUSED {
		t.Fatalf("State after Pause = %v, %v", st, err)
	}
	if _, err := h.svc.Pause(h.ctx, &taskAPI.PauseRequest{ID: "pod1"}); !isPrecondition(errNative(err)) {
		t.Fatalf("Pause twice: %v, want FailedPrecondition", err)
	}
	if _, err := h.svc.Resume(h.ctx, &taskAPI.ResumeRequest{ID: "pod1"}); err != nil {
		t.Fatal(err)
	}
	h.fake().OOM("pod1")
	h.pub.waitTopics(t, tCreate, tStart, tPaused, tResumed, tOOM)
}

// Shutdown ends the shim only when no task is left, and takes the VM down.
func TestShutdownOnlyWhenEmpty(t *testing.T) {
	h := newHarness(t)
	h.bootPod("pod1")
	if _, err := h.svc.Shutdown(h.ctx, &taskAPI.ShutdownRequest{ID: "pod1"}); err != nil || h.sd.called() {
		t.Fatalf("Shutdown with a live task: err %v, shut down %v", err, h.sd.called())
	}
	if _, err := h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "pod1", Signal: 15}); err != nil {
		t.Fatal(err)
	}
	if wr, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "pod1"}); err != nil || wr.ExitStatus != 128+15 {
		t.Fatalf("Wait after SIGTERM = %v, %v", wr, err)
	}
	if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "pod1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Shutdown(h.ctx, &taskAPI.ShutdownRequest{ID: "pod1"}); err != nil || !h.sd.called() {
		t.Fatalf("Shutdown with no task: err %v, shut down %v", err, h.sd.called())
	}
	if _, err := h.pod.Sandbox(); !isPrecondition(err) {
		t.Fatalf("the VM outlived Shutdown: %v", err)
	}
	h.pub.waitTopics(t, tCreate, tStart, tExit, tDelete)
}

// The pod's configuration comes from the runtime options' ConfigPath, else
// $COCO_CONFIG, else the embedded default ("").
func TestConfigSelection(t *testing.T) {
	opts, err := anypb.New(&runtimeopts.Options{ConfigPath: "/etc/coco/snp.toml"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		opts *anypb.Any
		env  string
		want string
	}{
		{"runtime option", opts, "/etc/coco/env.toml", "/etc/coco/snp.toml"},
		{"environment", nil, "/etc/coco/env.toml", "/etc/coco/env.toml"},
		{"default", nil, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.env["COCO_CONFIG"] = c.env
			b := h.bundle("pod1", sandboxAnnotations("pod1"), "pause")
			if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "pod1", Bundle: b, Options: c.opts}); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(h.fake().Opts.StateDir, sandboxtest.ConfigFile))
			if err != nil || string(got) != c.want {
				t.Fatalf("sandbox got config %q (%v), want %q", got, err, c.want)
			}
		})
	}
	h := newHarness(t)
	bad, _ := anypb.New(&runtimeopts.Options{ConfigPath: "relative.toml"})
	b := h.bundle("pod1", sandboxAnnotations("pod1"), "pause")
	_, err = h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "pod1", Bundle: b, Options: bad})
	wantCode(t, "relative ConfigPath", errNative(err), errdefs.IsInvalidArgument, "InvalidArgument")
	if !strings.Contains(err.Error(), "ConfigPath") {
		t.Fatalf("error does not name the option: %v", err)
	}
	if len(h.factory.Sandboxes()) != 0 {
		t.Fatal("a sandbox was created despite the bad option")
	}
	if _, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "pod1"}); !isNotFound(errNative(err)) {
		t.Fatalf("failed Create left a task behind: %v", err)
	}
}

// containerd may ask for an OOM score the host forbids lowering to: the
// pod still starts.
func TestOOMScoreRefusalDoesNotFail(t *testing.T) {
	h := newHarness(t)
	b := filepath.Join(h.dir, "bundles", "pod1")
	if err := os.MkdirAll(b, 0o755); err != nil {
		t.Fatal(err)
	}
	score := -998
	sp := specs.Spec{Process: &specs.Process{Args: []string{"pause"}, OOMScoreAdj: &score}, Annotations: sandboxAnnotations("pod1")}
	data, _ := json.Marshal(sp)
	if err := os.WriteFile(filepath.Join(b, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "pod1", Bundle: b}); err != nil {
		t.Fatalf("Create with oom_score_adj -998: %v", err)
	}
}

// A failing pod boot leaves nothing: no task, and the fake VM is stopped.
func TestSandboxBootFailureCleansUp(t *testing.T) {
	h := newHarness(t)
	h.factory.StartErr = errdefs.ErrUnavailable
	b := h.bundle("pod1", sandboxAnnotations("pod1"), "pause")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "pod1", Bundle: b}); err == nil {
		t.Fatal("Create succeeded although the VM did not boot")
	}
	if h.svc.table.len() != 0 {
		t.Fatal("the failed sandbox container is still in the table")
	}
	if _, ok := h.pod.Exit(); !ok {
		t.Fatal("the pod was not stopped after its boot failed")
	}
}

func procSpec(t *testing.T, args ...string) *anypb.Any {
	t.Helper()
	data, err := json.Marshal(specs.Process{Args: args})
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: data}
}

func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, _ := os.ReadFile(path)
		if string(got) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want %q", path, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func errNative(err error) error {
	if err == nil {
		return nil
	}
	return errgrpcToNative(err)
}

// A create the guest refuses comes back at once: the process never ran, so
// there is no output to drain before the error reaches containerd.
func TestRefusedCreateReturnsWithoutDrain(t *testing.T) {
	h := newHarness(t)
	h.bootPod("pod1")
	b := h.bundle("app", containerAnnotations("pod1"), sandboxtest.RefusedByGuest)
	out := "file://" + filepath.Join(t.TempDir(), "out.log")
	start := time.Now()
	_, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: b, Stdout: out, Stderr: out})
	wantCode(t, "refused create", errNative(err), errdefs.IsPermissionDenied, "PermissionDenied")
	if d := time.Since(start); d >= drainTimeout {
		t.Fatalf("the refusal took %v: it waited for output of a process that never ran", d)
	}
	if _, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "app"}); !errdefs.IsNotFound(errNative(err)) {
		t.Fatalf("the refused container is still in the table: %v", err)
	}
}

// The shim tells the sandbox each container's role and image from the CRI
// annotations, with the spec bytes it read: the sandbox reads neither.
func TestCreateTellsTheSandboxTheRole(t *testing.T) {
	h := newHarness(t)
	h.bootPod("pod1")
	a := containerAnnotations("pod1")
	a[options.ImageNameAnnotation] = "registry.example/app:1"
	b := h.bundle("app", a, "sleep")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: b}); err != nil {
		t.Fatal(err)
	}
	pause, ok := h.fake().Created("pod1")
	if !ok || !pause.Pause || pause.Image != "" {
		t.Fatalf("sandbox container: %+v, %v; want Pause", pause, ok)
	}
	app, _ := h.fake().Created("app")
	raw, err := os.ReadFile(filepath.Join(b, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if app.Pause || app.Image != "registry.example/app:1" || string(app.Spec) != string(raw) || app.Parsed == nil || app.Parsed.Process.Args[0] != "sleep" {
		t.Fatalf("workload container: %+v", app)
	}
}
