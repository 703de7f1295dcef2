package engine

import (
	"context"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"

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

func TestShippedPolicies(t *testing.T) {
	ctx := context.Background()
	all := mustCompile(t, policies.AllowAll)
	tee := mustCompile(t, policies.DefaultTEE)
	exec := policytest.ExecRequest(t, "sh", "-c", "cat /secret")
	start := &taskAPI.StartRequest{ID: "c1"}
	setPolicy := &api.SetPolicyRequest{Policy: "package agent_policy"}

	for _, tc := range []struct {
		name   string
		engine *Engine
		req    interface{}
		want   bool
	}{
		{"allow-all exec", all, exec, true},
		{"allow-all set policy", all, setPolicy, true},
		{"tee start", tee, start, true},
		{"tee exec", tee, exec, false},
		{"tee set policy", tee, setPolicy, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rule string
			var input map[string]any
			switch r := tc.req.(type) {
			case *taskAPI.ExecProcessRequest:
				rule, input = policy.RuleName(r), policy.Input(r)
			case *taskAPI.StartRequest:
				rule, input = policy.RuleName(r), policy.Input(r)
			case *api.SetPolicyRequest:
				rule, input = policy.RuleName(r), policy.Input(r)
			}
			got, err := tc.engine.Allowed(ctx, rule, input)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("%s: allowed = %v, want %v", rule, got, tc.want)
			}
		})
	}
}

func TestOwnerAllowsExactExec(t *testing.T) {
	src := strings.Replace(policies.DefaultTEE, `allowed_exec_argv := []`, `allowed_exec_argv := [["cat", "/etc/hostname"]]`, 1)
	e := mustCompile(t, src)
	ctx := context.Background()
	ok := policytest.ExecRequest(t, "cat", "/etc/hostname")
	if err := e.Check(ctx, "ExecProcess", policy.RuleName(ok), policy.Input(ok)); err != nil {
		t.Fatalf("allowed argv denied: %v", err)
	}
	for _, args := range [][]string{{"cat", "/etc/shadow"}, {"cat", "/etc/hostname", "/etc/shadow"}, {"cat"}} {
		r := policytest.ExecRequest(t, args...)
		err := e.Check(ctx, "ExecProcess", policy.RuleName(r), policy.Input(r))
		if !errdefs.IsPermissionDenied(err) {
			t.Fatalf("argv %q: err = %v, want permission denied", args, err)
		}
		want := "ExecProcess denied by agent policy (rule agent_policy.ExecProcessRequest)"
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not contain %q", err, want)
		}
	}
}

func TestOwnerAllowsExecByRegex(t *testing.T) {
	src := strings.Replace(policies.DefaultTEE, `allowed_exec_regex := []`, `allowed_exec_regex := ["^ls( -l)? /tmp$"]`, 1)
	e := mustCompile(t, src)
	for args, want := range map[string]bool{"ls /tmp": true, "ls -l /tmp": true, "ls /etc": false, "ls /tmp; rm -rf /": false} {
		r := policytest.ExecRequest(t, strings.Fields(args)...)
		got, err := e.Allowed(context.Background(), policy.RuleName(r), policy.Input(r))
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%q: allowed = %v, want %v", args, got, want)
		}
	}
}

func TestUndefinedRuleDenies(t *testing.T) {
	e := mustCompile(t, "package agent_policy\n\nStartRequest := true\n")
	r := &taskAPI.KillRequest{ID: "c1", Signal: 9}
	got, err := e.Allowed(context.Background(), policy.RuleName(r), policy.Input(r))
	if err != nil || got {
		t.Fatalf("undefined rule: allowed = %v, err = %v; want denied", got, err)
	}
}

func TestNonBooleanDenies(t *testing.T) {
	e := mustCompile(t, "package agent_policy\n\nStartRequest := \"yes\"\n")
	r := &taskAPI.StartRequest{ID: "c1"}
	if got, _ := e.Allowed(context.Background(), policy.RuleName(r), policy.Input(r)); got {
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
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Check(ctx, "Start", policy.RuleName(r), policy.Input(r)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDefaultPolicyExecDenied(b *testing.B) {
	e := mustCompile(b, policies.DefaultTEE)
	r := policytest.ExecRequest(b, "sh", "-c", "id")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Check(ctx, "ExecProcess", policy.RuleName(r), policy.Input(r)); err == nil {
			b.Fatal("exec allowed")
		}
	}
}
