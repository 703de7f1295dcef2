// Package policytest builds the requests the policy tests feed the engine.
package policytest

import (
	"encoding/json"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// ExecRequest is an ExecProcess of args in container c1, its process spec
// as containerd sends it (JSON in an Any).
func ExecRequest(t testing.TB, args ...string) *taskAPI.ExecProcessRequest {
	t.Helper()
	b, err := json.Marshal(map[string]any{"args": args, "cwd": "/"})
	if err != nil {
		t.Fatal(err)
	}
	return &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: &anypb.Any{
		TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b,
	}}
}
