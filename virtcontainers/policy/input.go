package policy

import (
	"encoding/base64"
	"encoding/json"

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

// Input turns a request into the policy's input document. Field names are
// the proto names (container_id, exec_id, ...). Bytes and Any fields that
// hold JSON (OCI specs, process specs) appear decoded, so a rule can say
// input.spec.args (an exec's process) or input.spec.process.args (a
// container's OCI spec).
func Input(req proto.Message) map[string]any {
	return messageValue(req.ProtoReflect())
}

func messageValue(m protoreflect.Message) map[string]any {
	out := map[string]any{}
	if a, ok := m.Interface().(*anypb.Any); ok {
		// containerd's Any values for OCI types hold JSON: show the document.
		if doc, ok := bytesValue(a.GetValue()).(map[string]any); ok {
			return doc
		}
		out["type_url"] = a.GetTypeUrl()
		out["value"] = bytesValue(a.GetValue())
		return out
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if redacted[fd.FullName()] {
			return true
		}
		out[string(fd.Name())] = fieldValue(fd, v)
		return true
	})
	return out
}

func fieldValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch {
	case fd.IsList():
		l := v.List()
		out := make([]any, l.Len())
		for i := range out {
			out[i] = scalarValue(fd, l.Get(i))
		}
		return out
	case fd.IsMap():
		out := map[string]any{}
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			out[k.String()] = scalarValue(fd.MapValue(), mv)
			return true
		})
		return out
	}
	return scalarValue(fd, v)
}

func scalarValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageValue(v.Message())
	case protoreflect.BytesKind:
		return bytesValue(v.Bytes())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return int64(v.Enum())
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BoolKind:
		return v.Bool()
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return v.Float()
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return v.Uint()
	default:
		return v.Int()
	}
}

// bytesValue decodes JSON documents (OCI specs travel as JSON bytes) and
// gives anything else as base64.
func bytesValue(b []byte) any {
	if len(b) > 0 && (b[0] == '{' || b[0] == '[') {
		var doc any
		if json.Unmarshal(b, &doc) == nil {
			return doc
		}
	}
	return base64.StdEncoding.EncodeToString(b)
}
