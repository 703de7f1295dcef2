package policyproc_test

import (
	"context"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
)

// A policy's reasons.<Rule> travels from coco-policy to the agent's error.
func TestDenialCarriesReason(t *testing.T) {
	p := engine(t, "serve")
	r, err := p.Compile("package agent_policy\nimport rego.v1\ndefault KillRequest := false\nreasons.KillRequest contains sprintf(\"kill: signal %d not allowed\", [input.signal])\n")
	if err != nil {
		t.Fatal(err)
	}
	err = r.Evaluate(context.Background(), "Kill", &taskAPI.KillRequest{ID: "c1", Signal: 9})
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "(rule agent_policy.KillRequest): kill: signal 9 not allowed") {
		t.Fatalf("err = %v, want a denial carrying the reason", err)
	}
}

// Several reasons, each up to the engine's bound, all reach the error: the
// agent bounds only the total again.
func TestDenialCarriesAllReasons(t *testing.T) {
	p := engine(t, "serve")
	r, err := p.Compile("package agent_policy\nimport rego.v1\ndefault KillRequest := false\nreasons.KillRequest contains concat(\"\", [\"a\", strings.replace_n({\"x\": \"y\"}, \"" + strings.Repeat("x", 200) + "\")])\nreasons.KillRequest contains \"b: second\"\n")
	if err != nil {
		t.Fatal(err)
	}
	err = r.Evaluate(context.Background(), "Kill", &taskAPI.KillRequest{ID: "c1", Signal: 9})
	if err == nil || !strings.Contains(err.Error(), "; b: second: permission denied") {
		t.Fatalf("err = %v, want both reasons", err)
	}
}
