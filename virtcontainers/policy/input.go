package policy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// RuleName is the policy rule that decides a request: its message type name,
// e.g. "ExecProcessRequest".
func RuleName(req proto.Message) string {
	return string(req.ProtoReflect().Descriptor().Name())
}

// redacted lists fields whose content never reaches the policy input (they
// may hold secrets and no rule needs their bytes).
var redacted = map[protoreflect.FullName]bool{
	"coco.agent.v1.File.content": true,
}

// factsKey carries Facts in a context.
type factsKey struct{}

// Facts are what the guest knows about a request that the request does
// not say, added to its policy input under their own names, e.g.
// "container_process" for an exec (see configs/policies/README.md).
// A json.RawMessage value appears decoded.
type Facts map[string]any

// WithFacts returns ctx carrying facts for the input of the request it is
// checked with.
func WithFacts(ctx context.Context, f Facts) context.Context {
	return context.WithValue(ctx, factsKey{}, f)
}

// Input turns a request into the policy's input document (its schema is
// configs/policies/README.md). Field names are the proto names
// (container_id, exec_id, ...). The JSON documents the guest acts on (the
// OCI spec of PrepareContainer, the process of ExecProcess, the resources
// of UpdateTask) appear decoded, so a rule can say input.spec.args; they
// must be in the canonical form Canonicalize leaves, or Input fails. Other
// bytes and Any fields appear as base64 (an Any as {type_url, value}). The
// facts carried by ctx (WithFacts) are added; a fact may not shadow a field.
func Input(ctx context.Context, req proto.Message) (map[string]any, error) {
	out, err := messageValue(req.ProtoReflect())
	if err != nil {
		return nil, err
	}
	facts, _ := ctx.Value(factsKey{}).(Facts)
	for k, v := range facts {
		if _, ok := out[k]; ok {
			return nil, fmt.Errorf("policy input: fact %q would shadow a field of %s", k, RuleName(req))
		}
		if raw, ok := v.(json.RawMessage); ok {
			if v, err = decodeJSON(raw); err != nil {
				return nil, fmt.Errorf("policy input: fact %q: %w", k, err)
			}
		}
		out[k] = v
	}
	return out, nil
}

func messageValue(m protoreflect.Message) (map[string]any, error) {
	out := map[string]any{}
	if a, ok := m.Interface().(*anypb.Any); ok {
		out["type_url"] = a.GetTypeUrl()
		out["value"] = base64.StdEncoding.EncodeToString(a.GetValue())
		return out, nil
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if redacted[fd.FullName()] {
			return true
		}
		out[string(fd.Name())], err = fieldValue(fd, v)
		return err == nil
	})
	return out, err
}

func fieldValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (any, error) {
	if _, ok := documents[fd.FullName()]; ok {
		var b []byte
		if fd.Kind() == protoreflect.BytesKind {
			b = v.Bytes()
		} else {
			b = v.Message().Interface().(*anypb.Any).GetValue()
		}
		if len(b) > 0 {
			return canonicalDocument(fd, b)
		}
	}
	switch {
	case fd.IsList():
		l := v.List()
		out := make([]any, l.Len())
		for i := range out {
			var err error
			if out[i], err = scalarValue(fd, l.Get(i)); err != nil {
				return nil, err
			}
		}
		return out, nil
	case fd.IsMap():
		out := map[string]any{}
		var err error
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			out[k.String()], err = scalarValue(fd.MapValue(), mv)
			return err == nil
		})
		return out, err
	}
	return scalarValue(fd, v)
}

func scalarValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (any, error) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageValue(v.Message())
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes()), nil
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name()), nil
		}
		return int64(v.Enum()), nil
	case protoreflect.StringKind:
		return v.String(), nil
	case protoreflect.BoolKind:
		return v.Bool(), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return v.Float(), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return v.Uint(), nil
	default:
		return v.Int(), nil
	}
}
