package policy

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

func execOf(doc string) *taskAPI.ExecProcessRequest {
	return &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: &anypb.Any{TypeUrl: ProcessTypeURL, Value: []byte(doc)}}
}

// Documents the policy and the runtime would read differently are refused
// by Canonicalize with the field named, and Input will not show them.
func TestCanonicalizeRefusesAmbiguousDocuments(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  proto.Message
		want string
	}{
		{"exec case variant", execOf(`{"args":["cat","/etc/hostname"],"Args":["sh","-c","cat /secret"],"cwd":"/"}`), `spec.Args: unknown field; keys are case-sensitive: write "args"`},
		{"exec duplicate", execOf(`{"args":["cat","/etc/hostname"],"args":["sh"],"cwd":"/"}`), "spec.args: key appears twice"},
		{"exec leading space", execOf(` {"args":["sh"],"cwd":"/"}`), "spec: want a JSON object starting with '{'"},
		{"exec trailing data", execOf(`{"args":["sh"],"cwd":"/"} `), "spec: 1 bytes after the JSON object"},
		{"exec not an object", execOf(`["sh"]`), "spec: want a JSON object"},
		{"exec type url", &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: &anypb.Any{TypeUrl: "x/Process", Value: []byte(`{"args":["sh"]}`)}}, `spec.type_url: "x/Process" is not accepted`},
		{"prepare nested case variant", &api.PrepareContainerRequest{ContainerId: "c1", Spec: []byte(`{"process":{"args":["sh"],"cwd":"/","User":{"uid":0}}}`)}, `spec.process.User: unknown field; keys are case-sensitive: write "user"`},
		{"prepare unknown", &api.PrepareContainerRequest{ContainerId: "c1", Spec: []byte(`{"process":{"args":["sh"],"cwd":"/"},"privileged":true}`)}, "spec.privileged: unknown field"},
		{"update case variant", &taskAPI.UpdateTaskRequest{ID: "c1", Resources: &anypb.Any{TypeUrl: ResourcesTypeURL,
			Value: []byte(`{"devices":[{"allow":false,"access":"rwm"}],"Devices":[{"allow":true,"access":"rwm"}]}`)}}, "resources.Devices: unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := proto.Clone(tc.req)
			_, err := Canonicalize(tc.req)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want invalid argument containing %q", err, tc.want)
			}
			// Had the gate skipped Canonicalize, the policy would deny.
			if _, err := Input(context.Background(), orig); err == nil {
				t.Fatal("Input accepted a document that is not canonical")
			}
		})
	}
}

// After Canonicalize the request's bytes are json.Marshal of what the
// runtime decodes, and the policy's input is that document.
func TestCanonicalizeReplacesTheBytes(t *testing.T) {
	r := execOf("{\"cwd\": \"/\",\n \"args\": [\"c\\u0061t\", \"/etc/hostname\"], \"user\": {\"uid\": 1000, \"gid\": 1000}}")
	docs, err := Canonicalize(r)
	if err != nil {
		t.Fatal(err)
	}
	p := docs["spec"].(*specs.Process)
	want, _ := json.Marshal(p)
	if string(r.Spec.Value) != string(want) {
		t.Fatalf("bytes = %s, want %s", r.Spec.Value, want)
	}
	if p.Args[0] != "cat" || p.User.UID != 1000 {
		t.Fatalf("decoded %+v", p)
	}
	again := proto.Clone(r).(*taskAPI.ExecProcessRequest)
	if _, err := Canonicalize(again); err != nil || string(again.Spec.Value) != string(r.Spec.Value) {
		t.Fatalf("canonical form is not stable: %s, %v", again.Spec.Value, err)
	}
	in, err := Input(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if got := in["spec"].(map[string]any)["args"].([]any)[0]; got != "cat" {
		t.Fatalf("policy sees args[0] = %v", got)
	}
}

// Bytes no runtime reads as JSON reach the policy as base64, never as a
// document of the policy's own reading.
func TestOtherBytesStayOpaque(t *testing.T) {
	r := &taskAPI.CheckpointTaskRequest{ID: "c1", Path: "/x", Options: &anypb.Any{TypeUrl: "x", Value: []byte(`{"a":1}`)}}
	if _, err := Canonicalize(r); err != nil {
		t.Fatal(err)
	}
	in, err := Input(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	opts := in["options"].(map[string]any)
	if opts["type_url"] != "x" || opts["value"] != "eyJhIjoxfQ==" {
		t.Fatalf("options = %v", opts)
	}
}
