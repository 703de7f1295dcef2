package policy

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/virtcontainers/policy/strictjson"
)

// Type URLs containerd gives the OCI documents it sends in Any fields.
const (
	ProcessTypeURL   = "types.containerd.io/opencontainers/runtime-spec/1/Process"
	ResourcesTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
)

// document is a request field that holds a JSON document the guest acts
// on: the Go type the guest's runtime decodes it into, and for an Any the
// only type URL accepted.
type document struct {
	typeURL string // "" for a bytes field
	newT    func() any
}

// documents are every request field whose bytes are JSON that the guest
// acts on. Anything else (bytes, Any) reaches the policy as opaque base64:
// a policy must never read a document the runtime does not read the same way.
var documents = map[protoreflect.FullName]document{
	"coco.agent.v1.PrepareContainerRequest.spec":     {newT: func() any { return new(specs.Spec) }},
	"containerd.task.v3.ExecProcessRequest.spec":     {typeURL: ProcessTypeURL, newT: func() any { return new(specs.Process) }},
	"containerd.task.v3.UpdateTaskRequest.resources": {typeURL: ResourcesTypeURL, newT: func() any { return new(specs.LinuxResources) }},
}

// Canonicalize decodes every JSON document in req strictly (see
// strictjson.Decode) and replaces its bytes, in place, by json.Marshal of
// the decoded value: after it, the policy and the runtime read the same
// bytes, which have exactly one reading. It returns the decoded values by
// field name (*specs.Spec, *specs.Process, *specs.LinuxResources). Empty
// fields are left alone: whether a document is required is the caller's
// business. Errors are errdefs.ErrInvalidArgument and name the field.
func Canonicalize(req proto.Message) (map[string]any, error) {
	out := map[string]any{}
	m := req.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		doc, ok := documents[fd.FullName()]
		if !ok {
			continue
		}
		raw, set := docBytes(m, fd, doc)
		if raw == nil {
			continue
		}
		if err := checkTypeURL(m, fd, doc); err != nil {
			return nil, err
		}
		v := doc.newT()
		if err := strictjson.Decode(string(fd.Name()), raw, v); err != nil {
			return nil, err
		}
		canon, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("%s: re-encode: %v: %w", fd.Name(), err, errdefs.ErrInvalidArgument)
		}
		set(canon)
		out[string(fd.Name())] = v
	}
	return out, nil
}

// docBytes returns the document bytes of field fd (nil when empty) and a
// function that replaces them.
func docBytes(m protoreflect.Message, fd protoreflect.FieldDescriptor, doc document) ([]byte, func([]byte)) {
	if fd.Kind() == protoreflect.BytesKind {
		b := m.Get(fd).Bytes()
		if len(b) == 0 {
			return nil, nil
		}
		return b, func(c []byte) { m.Set(fd, protoreflect.ValueOfBytes(c)) }
	}
	if !m.Has(fd) {
		return nil, nil
	}
	a, ok := m.Get(fd).Message().Interface().(*anypb.Any)
	if !ok || len(a.GetValue()) == 0 {
		return nil, nil
	}
	return a.Value, func(c []byte) { a.Value = c }
}

func checkTypeURL(m protoreflect.Message, fd protoreflect.FieldDescriptor, doc document) error {
	if doc.typeURL == "" {
		return nil
	}
	a := m.Get(fd).Message().Interface().(*anypb.Any)
	if a.GetTypeUrl() != doc.typeURL {
		return fmt.Errorf("%s.type_url: %q is not accepted: want %q: %w", fd.Name(), a.GetTypeUrl(), doc.typeURL, errdefs.ErrInvalidArgument)
	}
	return nil
}

// canonicalDocument is the policy's view of a document field: its
// canonical bytes decoded, numbers kept exact. Bytes that are not what
// Canonicalize leaves are an error, so a request that skipped it is denied
// rather than read differently by the policy and the runtime.
func canonicalDocument(fd protoreflect.FieldDescriptor, raw []byte) (any, error) {
	v := documents[fd.FullName()].newT()
	err := strictjson.Decode(string(fd.Name()), raw, v)
	var canon []byte
	if err == nil {
		canon, err = json.Marshal(v)
	}
	if err != nil || !bytes.Equal(canon, raw) {
		return nil, fmt.Errorf("policy input: %s is not in canonical form (the guest canonicalises documents before asking the policy): %w", fd.FullName(), errdefs.ErrInvalidArgument)
	}
	return decodeJSON(raw)
}

// decodeJSON decodes a JSON value with exact numbers (json.Number), as the
// policy engine reads them.
func decodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}
