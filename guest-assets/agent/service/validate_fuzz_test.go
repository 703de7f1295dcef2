package service

import (
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// FuzzTaskRequests decodes wire bytes as the task requests whose fields the
// guest checks beyond ids (Create, Exec, Kill, Update) and validates them:
// no panic, and every refusal is InvalidArgument.
func FuzzTaskRequests(f *testing.F) {
	for _, m := range []proto.Message{
		&taskAPI.CreateTaskRequest{ID: "c1", Bundle: "/run/coco/bundles/c1", Stdout: "s"},
		&taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: &anypb.Any{
			TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process",
			Value:   []byte(`{"args":["sh"],"cwd":"/"}`)}},
		&taskAPI.KillRequest{ID: "c1", Signal: 9},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		for method, m := range map[string]proto.Message{
			"/containerd.task.v3.Task/Create": &taskAPI.CreateTaskRequest{},
			"/containerd.task.v3.Task/Exec":   &taskAPI.ExecProcessRequest{},
			"/containerd.task.v3.Task/Kill":   &taskAPI.KillRequest{},
			"/containerd.task.v3.Task/Update": &taskAPI.UpdateTaskRequest{},
		} {
			if proto.Unmarshal(wire, m) != nil {
				continue
			}
			if err := ValidateTask(method, m); err != nil && !errdefs.IsInvalidArgument(err) {
				t.Fatalf("%s: unclassified error %v", method, err)
			}
		}
	})
}
