package policy

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/policy/policytest"
)

func TestInputShape(t *testing.T) {
	spec := []byte(`{"process":{"args":["sh"],"cwd":"/"},"hostname":"h"}`)
	r := &api.PrepareContainerRequest{ContainerId: "c1", Spec: spec, Files: []*api.File{{Destination: "/etc/hosts", Content: []byte("secret")}}}
	if _, err := Canonicalize(r); err != nil {
		t.Fatal(err)
	}
	in, err := Input(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
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
	exec, err := Input(context.Background(), policytest.ExecRequest(t, "ls"))
	if err != nil {
		t.Fatal(err)
	}
	if args := exec["spec"].(map[string]any)["args"].([]any); args[0] != "ls" {
		t.Fatalf("exec args = %v", args)
	}
}

func TestInputFacts(t *testing.T) {
	ctx := WithFacts(context.Background(), Facts{"container_process": json.RawMessage(`{"args":["sleep"],"oomScoreAdj":18446744073709551615}`)})
	in, err := Input(ctx, policytest.ExecRequest(t, "ls"))
	if err != nil {
		t.Fatal(err)
	}
	// Numbers stay exact on their way to the engine.
	if got := in["container_process"].(map[string]any)["oomScoreAdj"]; got != json.Number("18446744073709551615") {
		t.Fatalf("container_process.oomScoreAdj = %#v", got)
	}
	_, err = Input(WithFacts(context.Background(), Facts{"spec": "x"}), policytest.ExecRequest(t, "ls"))
	if err == nil || !strings.Contains(err.Error(), `fact "spec" would shadow a field`) {
		t.Fatalf("shadowing fact: err = %v", err)
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
