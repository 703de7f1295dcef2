package engine

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/configs/policies"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/policy"
	"github.com/coco-runtime/coco/virtcontainers/policy/policytest"
)

func mustCompile(t testing.TB, src string) *Engine {
	t.Helper()
	e, err := Compile(src)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// decide canonicalises req as the guest's gate does, builds its input
// with facts, and asks e.
func decide(t testing.TB, e *Engine, req proto.Message, facts policy.Facts) bool {
	t.Helper()
	ctx := context.Background()
	if facts != nil {
		ctx = policy.WithFacts(ctx, facts)
	}
	if _, err := policy.Canonicalize(req); err != nil {
		t.Fatal(err)
	}
	in, err := policy.Input(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := e.Allowed(ctx, policy.RuleName(req), in)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// containerFacts is what the guest adds to an exec's input for a
// container whose process is p.
func containerFacts(t testing.TB, p *specs.Process) policy.Facts {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return policy.Facts{"container_process": json.RawMessage(b)}
}

func TestShippedPolicies(t *testing.T) {
	all := mustCompile(t, policies.AllowAll)
	tee := mustCompile(t, policies.DefaultTEE)
	for _, tc := range []struct {
		name   string
		engine *Engine
		req    proto.Message
		want   bool
	}{
		{"allow-all exec", all, policytest.ExecRequest(t, "sh", "-c", "cat /secret"), true},
		{"allow-all set policy", all, &api.SetPolicyRequest{Policy: "package agent_policy"}, true},
		{"allow-all privileged container", all, policytest.Prepare(t, privileged(policytest.CRISpec("sh"))), true},
		{"tee start", tee, &taskAPI.StartRequest{ID: "c1"}, true},
		{"tee container", tee, policytest.Prepare(t, policytest.CRISpec("sh")), true},
		{"tee exec", tee, policytest.ExecRequest(t, "sh", "-c", "cat /secret"), false},
		{"tee set policy", tee, &api.SetPolicyRequest{Policy: "package agent_policy"}, false},
		{"tee stdout", tee, &api.ReadStreamRequest{ContainerId: "c1", Kind: "stdout"}, false},
		{"tee stdin", tee, &api.WriteStreamRequest{ContainerId: "c1"}, false},
		{"tee port-forward", tee, &api.PortForwardRequest{Port: 8080}, false},
		{"allow-all port-forward", all, &api.PortForwardRequest{Port: 8080}, true},
		{"tee workload resource", tee, &api.GetResourceRequest{Path: "default/key/1"}, true},
		{"tee workload token", tee, &api.GetTokenRequest{TokenType: "kbs"}, true},
		{"allow-all workload evidence", all, &api.GetEvidenceRequest{RuntimeData: []byte("x")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(t, tc.engine, tc.req, nil); got != tc.want {
				t.Fatalf("%s: allowed = %v, want %v", policy.RuleName(tc.req), got, tc.want)
			}
		})
	}
}

// An owner narrows the workload API to the paths its containers need.
func TestOwnerPinsResourcePaths(t *testing.T) {
	src := strings.Replace(policies.DefaultTEE, "default GetResourceRequest := true",
		"default GetResourceRequest := false\n\nGetResourceRequest if input.path == \"default/key/app\"", 1)
	e := mustCompile(t, src)
	if !decide(t, e, &api.GetResourceRequest{Path: "default/key/app"}, nil) {
		t.Fatal("the pinned path was refused")
	}
	if decide(t, e, &api.GetResourceRequest{Path: "default/key/other"}, nil) {
		t.Fatal("another path was allowed")
	}
}

func TestOwnerAllowsExactExec(t *testing.T) {
	src := strings.Replace(policies.DefaultTEE, `allowed_exec_argv := []`, `allowed_exec_argv := [["cat", "/etc/hostname"]]`, 1)
	e := mustCompile(t, src)
	ctx := context.Background()
	c := policytest.CRIProcess("sleep", "1000")
	facts := policy.WithFacts(ctx, containerFacts(t, c))
	exec := func(args ...string) *taskAPI.ExecProcessRequest {
		p := *c
		p.Args = args
		return policytest.Exec(t, p)
	}
	ok := exec("cat", "/etc/hostname")
	in, err := policy.Input(facts, ok)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Check(ctx, "ExecProcess", policy.RuleName(ok), in); err != nil {
		t.Fatalf("allowed argv denied: %v", err)
	}
	for _, args := range [][]string{{"cat", "/etc/shadow"}, {"cat", "/etc/hostname", "/etc/shadow"}, {"cat"}, {"cat /etc/hostname"}} {
		r := exec(args...)
		in, err := policy.Input(facts, r)
		if err != nil {
			t.Fatal(err)
		}
		err = e.Check(ctx, "ExecProcess", policy.RuleName(r), in)
		if !errdefs.IsPermissionDenied(err) {
			t.Fatalf("argv %q: err = %v, want permission denied", args, err)
		}
		want := "ExecProcess denied by agent policy (rule agent_policy.ExecProcessRequest)"
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not contain %q", err, want)
		}
	}
}

// The regex form is one pattern per argument, each matching its whole
// argument: argv is never joined, so ["ls -l", "/tmp"] is not ["ls", "-l", "/tmp"].
func TestOwnerAllowsExecByRegex(t *testing.T) {
	src := strings.Replace(policies.DefaultTEE, `allowed_exec_regex := []`, `allowed_exec_regex := [["ls"], ["ls", "-l|-la", "/tmp(/[a-z]+)?"]]`, 1)
	e := mustCompile(t, src)
	c := policytest.CRIProcess("sleep", "1000")
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"ls"}, true},
		{[]string{"ls", "-l", "/tmp"}, true},
		{[]string{"ls", "-la", "/tmp/abc"}, true},
		{[]string{"ls -l", "/tmp"}, false},
		{[]string{"ls", "-l /tmp"}, false},
		{[]string{"ls", "-l", "/etc"}, false},
		{[]string{"ls", "-l", "/tmp/../etc"}, false},
		{[]string{"ls", "-l", "/tmp; cat /secret"}, false},
		{[]string{"xls"}, false},
		{[]string{"ls", "-l", "/tmp", "/etc"}, false},
	} {
		p := *c
		p.Args = tc.args
		if got := decide(t, e, policytest.Exec(t, p), containerFacts(t, c)); got != tc.want {
			t.Errorf("%q: allowed = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestUndefinedRuleDenies(t *testing.T) {
	e := mustCompile(t, "package agent_policy\n\nStartRequest := true\n")
	if decide(t, e, &taskAPI.KillRequest{ID: "c1", Signal: 9}, nil) {
		t.Fatal("undefined rule: allowed, want denied")
	}
}

func TestNonBooleanDenies(t *testing.T) {
	e := mustCompile(t, "package agent_policy\n\nStartRequest := \"yes\"\n")
	if decide(t, e, &taskAPI.StartRequest{ID: "c1"}, nil) {
		t.Fatal("a non-boolean rule value allowed the request")
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"parse", "package agent_policy\n\nStartRequest if {\n", "rego_parse_error"},
		{"compile", "package agent_policy\n\nStartRequest if { input.x == undefined_thing }\n", "policy.rego:3"},
		{"package", "package other\n\nStartRequest := true\n", `must be "package agent_policy"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want invalid argument", err)
			}
		})
	}
}

func BenchmarkDefaultPolicyStart(b *testing.B) {
	e := mustCompile(b, policies.DefaultTEE)
	r := &taskAPI.StartRequest{ID: "c1"}
	ctx := context.Background()
	in, err := policy.Input(ctx, r)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Check(ctx, "Start", policy.RuleName(r), in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDefaultPolicyExecDenied(b *testing.B) {
	e := mustCompile(b, policies.DefaultTEE)
	r := policytest.ExecRequest(b, "sh", "-c", "id")
	ctx := context.Background()
	in, err := policy.Input(ctx, r)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Check(ctx, "ExecProcess", policy.RuleName(r), in); err == nil {
			b.Fatal("exec allowed")
		}
	}
}
