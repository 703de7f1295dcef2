package policy

import (
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/policy/policytest"
)

func TestInputShape(t *testing.T) {
	spec := []byte(`{"process":{"args":["sh"]},"hostname":"h"}`)
	r := &api.PrepareContainerRequest{ContainerId: "c1", Spec: spec, Files: []*api.File{{Destination: "/etc/hosts", Content: []byte("secret")}}}
	in := Input(r)
	if in["container_id"] != "c1" {
		t.Fatalf("container_id = %v", in["container_id"])
	}
	if got := in["spec"].(map[string]any)["hostname"]; got != "h" {
		t.Fatalf("spec not decoded: %v", in["spec"])
	}
	f := in["files"].([]any)[0].(map[string]any)
	if _, ok := f["content"]; ok {
		t.Fatal("file content reached the policy input")
	}
	if f["destination"] != "/etc/hosts" {
		t.Fatalf("destination = %v", f["destination"])
	}
	exec := Input(policytest.ExecRequest(t, "ls"))
	if args := exec["spec"].(map[string]any)["args"].([]any); args[0] != "ls" {
		t.Fatalf("exec args = %v", args)
	}
}

func TestRuleNameAndDenied(t *testing.T) {
	if got := RuleName(&taskAPI.KillRequest{}); got != "KillRequest" {
		t.Fatalf("rule = %q, want KillRequest", got)
	}
	err := Denied("Kill", "KillRequest")
	if !errdefs.IsPermissionDenied(err) || err.Error() != "Kill denied by agent policy (rule agent_policy.KillRequest): permission denied" {
		t.Fatalf("Denied = %v", err)
	}
}
