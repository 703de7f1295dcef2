// Package strictjson decodes a JSON document from the untrusted host into a
// Go struct so that the document has exactly one reading. encoding/json
// matches object keys to struct fields case-insensitively and lets the last
// of two equal keys win, while a policy engine reading the same bytes as a
// generic document sees every key as written: {"args":[..],"Args":[..]} is
// one thing to the policy and another to the runtime. Decode refuses every
// document where the two readings could differ.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/containerd/errdefs"
)

// Decode decodes data, a JSON object, into v (a pointer to a struct). It
// refuses, with an errdefs.ErrInvalidArgument error that names the field
// under the prefix field:
//   - anything but a single object: leading or trailing whitespace,
//     trailing data, a top-level array, string or null;
//   - an object key that is not exactly (case-sensitively) the JSON name of
//     a field of the struct it decodes into, e.g. "Args" for "args";
//   - the same key twice in one object (in structs and in maps);
//   - a value of the wrong JSON type for its field.
//
// Map keys are taken as written: Go decodes them case-sensitively, so
// "Foo" and "foo" in a map are two keys to every reader.
func Decode(field string, data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("strictjson.Decode: want a non-nil pointer, got %T", v)
	}
	if len(data) == 0 || data[0] != '{' {
		return invalid(field, "want a JSON object starting with '{' (no leading whitespace)")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walk(dec, rv.Type().Elem(), field); err != nil {
		return err
	}
	if dec.InputOffset() != int64(len(data)) {
		return invalid(field, "%d bytes after the JSON object: send exactly one object, with no trailing whitespace", int64(len(data))-dec.InputOffset())
	}
	if err := json.Unmarshal(data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			name := field
			if te.Field != "" {
				name += "." + te.Field
			}
			return invalid(name, "JSON %s where %s is expected", te.Value, te.Type)
		}
		return invalid(field, "%v", err)
	}
	return nil
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// walk reads one JSON value from dec, checking every object in it against
// t, the Go type it will be decoded into (nil: any value).
func walk(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return invalid(path, "malformed JSON: %v", err)
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, t, path)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walk(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return closing(dec, path)
	}
	return nil // a scalar: its type is checked by json.Unmarshal
}

func walkObject(dec *json.Decoder, t reflect.Type, path string) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	checkKeys := false
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields, checkKeys = jsonFields(t), true
		case reflect.Map:
			elem = t.Elem()
		}
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalid(path, "malformed JSON: %v", err)
		}
		key := tok.(string) // the decoder only yields string keys
		name := path + "." + key
		if seen[key] {
			return invalid(name, "key appears twice in one object; send it once")
		}
		seen[key] = true
		if checkKeys {
			ft, ok := fields[key]
			if !ok {
				return unknownField(name, key, fields)
			}
			elem = ft
		}
		if err := walk(dec, elem, name); err != nil {
			return err
		}
	}
	return closing(dec, path)
}

// closing reads the ']' or '}' that ends the value at path.
func closing(dec *json.Decoder, path string) error {
	if _, err := dec.Token(); err != nil {
		return invalid(path, "malformed JSON: %v", err)
	}
	return nil
}

func unknownField(name, key string, fields map[string]reflect.Type) error {
	for f := range fields {
		if strings.EqualFold(f, key) {
			return invalid(name, "unknown field; keys are case-sensitive: write %q", f)
		}
	}
	return invalid(name, "unknown field: the guest does not know it, so neither its policy nor its runtime may act on it; remove it")
}

// jsonFields maps the JSON names of t's fields, as encoding/json encodes
// them, to their types. Fields of embedded structs without a name of their
// own are promoted; an outer field hides an inner one of the same name.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	var embedded []reflect.Type
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	for _, et := range embedded {
		for name, ft := range jsonFields(et) {
			if _, ok := out[name]; !ok {
				out[name] = ft
			}
		}
	}
	return out
}
