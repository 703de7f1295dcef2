package policyproc_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/configs/policies"
	"github.com/coco-runtime/coco/guest-assets/agent/policyproc"
	"github.com/coco-runtime/coco/guest-assets/agent/policyproc/server"
	"github.com/coco-runtime/coco/virtcontainers/policy"
	"github.com/coco-runtime/coco/virtcontainers/policy/policytest"
)

// The test binary doubles as the engine process: POLICYPROC_TEST_MODE picks
// what it does when the client starts it.
func TestMain(m *testing.M) {
	switch os.Getenv("POLICYPROC_TEST_MODE") {
	case "serve":
		if err := server.Serve(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "hang": // reads requests, never answers
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case "exit": // answers nothing, dies at once
		os.Exit(3)
	case "garbage": // answers nonsense, then would wait for ever
		os.WriteFile(os.Getenv("POLICYPROC_TEST_PIDFILE"), []byte(strconv.Itoa(os.Getpid())), 0o600)
		bufio.NewReader(os.Stdin).ReadString('\n')
		fmt.Println("not json")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func engine(t *testing.T, mode string) *policyproc.Proc {
	t.Helper()
	t.Setenv("POLICYPROC_TEST_MODE", mode)
	p := policyproc.New(policyproc.TestReaper{}, os.Args[0])
	t.Cleanup(p.Close)
	return p
}

func TestDefaultTEEPolicyThroughTheEngine(t *testing.T) {
	p := engine(t, "serve")
	tee, err := p.Compile(policies.DefaultTEE)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := tee.Evaluate(ctx, "Start", &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatalf("Start denied: %v", err)
	}
	err = tee.Evaluate(ctx, "ExecProcess", policytest.ExecRequest(t, "sh"))
	want := "ExecProcess denied by agent policy (rule agent_policy.ExecProcessRequest)"
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("exec: err = %v, want permission denied containing %q", err, want)
	}
}

// The guest's facts about an exec (the container's own process) reach
// coco-policy with the request, and the default TEE policy's whole-process
// rule holds there too.
func TestExecFactsReachTheEngine(t *testing.T) {
	p := engine(t, "serve")
	src := strings.Replace(policies.DefaultTEE, `allowed_exec_argv := []`, `allowed_exec_argv := [["cat", "/etc/hostname"]]`, 1)
	pol, err := p.Compile(src)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := json.Marshal(policytest.CRIProcess("sleep", "1000"))
	ctx := policy.WithFacts(context.Background(), policy.Facts{"container_process": json.RawMessage(own)})
	exec := policytest.CRIProcess("cat", "/etc/hostname")
	if err := pol.Evaluate(ctx, "ExecProcess", policytest.Exec(t, *exec)); err != nil {
		t.Fatalf("containerd's exec of an allowed command denied: %v", err)
	}
	exec.Env = append(exec.Env, "LD_PRELOAD=/tmp/evil.so")
	if err := pol.Evaluate(ctx, "ExecProcess", policytest.Exec(t, *exec)); !errdefs.IsPermissionDenied(err) {
		t.Fatalf("exec with LD_PRELOAD: err = %v, want denied", err)
	}
	// A document that was not canonicalised is denied, not read.
	r := policytest.ExecRequest(t, "cat", "/etc/hostname")
	r.Spec.Value = append([]byte(" "), r.Spec.Value...)
	if err := pol.Evaluate(ctx, "ExecProcess", r); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Fatalf("non-canonical exec: err = %v, want an error about canonical form", err)
	}
}

func TestInputReachesTheEngineExactly(t *testing.T) {
	p := engine(t, "serve")
	pol, err := p.Compile("package agent_policy\n\nKillRequest if { input.signal == 9; input.id == \"c1\" }\n" +
		"ExecProcessRequest if input.spec.args == [\"cat\", \"/etc/hostname\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := pol.Evaluate(ctx, "Kill", &taskAPI.KillRequest{ID: "c1", Signal: 9}); err != nil {
		t.Fatalf("kill 9 denied: %v", err)
	}
	if err := pol.Evaluate(ctx, "Kill", &taskAPI.KillRequest{ID: "c1", Signal: 15}); !errdefs.IsPermissionDenied(err) {
		t.Fatalf("kill 15: err = %v, want denied", err)
	}
	if err := pol.Evaluate(ctx, "ExecProcess", policytest.ExecRequest(t, "cat", "/etc/hostname")); err != nil {
		t.Fatalf("allowed exec denied: %v", err)
	}
	if err := pol.Evaluate(ctx, "Start", &taskAPI.StartRequest{ID: "c1"}); !errdefs.IsPermissionDenied(err) {
		t.Fatalf("undefined rule: err = %v, want denied", err)
	}
}

func TestCompileErrorIsInvalidArgument(t *testing.T) {
	p := engine(t, "serve")
	_, err := p.Compile("package agent_policy\n\nStartRequest if {\n")
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "rego_parse_error") {
		t.Fatalf("err = %v, want invalid argument with the parser's message", err)
	}
	// The engine lives on: the next policy compiles.
	if _, err := p.Compile(policies.AllowAll); err != nil {
		t.Fatal(err)
	}
}

func TestReplacedPoliciesAreDropped(t *testing.T) {
	p := engine(t, "serve")
	first, err := p.Compile(policies.AllowAll)
	if err != nil {
		t.Fatal(err)
	}
	var newest *policyproc.Rego
	for range server.MaxPolicies {
		if newest, err = p.Compile(policies.AllowAll); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if err := newest.Evaluate(ctx, "Start", &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatalf("newest policy: %v", err)
	}
	err = first.Evaluate(ctx, "Start", &taskAPI.StartRequest{ID: "c1"})
	if err == nil || !strings.Contains(err.Error(), "replaced by newer ones") {
		t.Fatalf("evicted policy: err = %v, want an error (a denial at the gate)", err)
	}
}

func TestEngineThatCannotStartFailsClosed(t *testing.T) {
	p := policyproc.New(policyproc.TestReaper{}, "/nonexistent/coco-policy")
	defer p.Close()
	_, err := p.Compile(policies.AllowAll)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "/nonexistent/coco-policy") {
		t.Fatalf("err = %v, want unavailable naming the binary", err)
	}
}

// An engine that answers garbage is killed, not left waiting for a next
// request that never comes.
func TestEngineThatAnswersGarbageIsKilled(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	t.Setenv("POLICYPROC_TEST_PIDFILE", pidFile)
	p := engine(t, "garbage")
	_, err := p.Compile(policies.AllowAll)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "talking to the policy engine") {
		t.Fatalf("err = %v, want unavailable", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(b))
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("engine %d still running after it answered garbage", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEngineThatDiesBreaksEveryLaterCall(t *testing.T) {
	p := engine(t, "exit")
	_, err := p.Compile(policies.AllowAll)
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("err = %v, want unavailable", err)
	}
	_, again := p.Compile(policies.AllowAll)
	if !errors.Is(again, errdefs.ErrUnavailable) {
		t.Fatalf("second call: err = %v, want the same failure", again)
	}
}

// BenchmarkEvaluateThroughProcess is one request decided by the default TEE
// policy in coco-policy: JSON out, OPA, JSON back. Compare with
// virtcontainers/policy/engine's in-process BenchmarkDefaultPolicyStart.
func BenchmarkEvaluateThroughProcess(b *testing.B) {
	b.Setenv("POLICYPROC_TEST_MODE", "serve")
	p := policyproc.New(policyproc.TestReaper{}, os.Args[0])
	defer p.Close()
	tee, err := p.Compile(policies.DefaultTEE)
	if err != nil {
		b.Fatal(err)
	}
	r := &taskAPI.StartRequest{ID: "c1"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := tee.Evaluate(ctx, "Start", r); err != nil {
			b.Fatal(err)
		}
	}
}
