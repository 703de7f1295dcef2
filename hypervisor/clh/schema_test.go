package clh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
)

// openAPI is the transcription of the upstream schema in
// testdata/openapi-subset.json: the operations and component schemas the
// driver uses.
type openAPI struct {
	Paths      map[string]operation `json:"paths"`
	Components struct {
		Schemas map[string]*schemaNode `json:"schemas"`
	} `json:"components"`
}

type operation struct {
	Method      string             `json:"method"`
	RequestBody string             `json:"requestBody"` // $ref or ""
	Responses   map[string]*string `json:"responses"`   // status → $ref or null
}

type schemaNode struct {
	Ref                  string                 `json:"$ref"`
	Type                 string                 `json:"type"`
	Format               string                 `json:"format"`
	Enum                 []string               `json:"enum"`
	Minimum              *float64               `json:"minimum"`
	Maximum              *float64               `json:"maximum"`
	Required             []string               `json:"required"`
	Properties           map[string]*schemaNode `json:"properties"`
	AdditionalProperties *schemaNode            `json:"additionalProperties"`
	Items                *schemaNode            `json:"items"`
	NotTranscribed       bool                   `json:"x-not-transcribed"`
}

func loadOpenAPI(path string) (*openAPI, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s openAPI
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

func mustLoadOpenAPI(t testing.TB) *openAPI {
	t.Helper()
	s, err := loadOpenAPI("testdata/openapi-subset.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// validateJSON decodes body (numbers kept exact) and checks it against the
// named component schema.
func (s *openAPI) validateJSON(ref string, body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("body is not JSON: %v", err)
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON body")
	}
	return s.validate(&schemaNode{Ref: ref}, v, "$")
}

func (s *openAPI) resolve(n *schemaNode) (*schemaNode, string, error) {
	name := ""
	for n.Ref != "" {
		name = strings.TrimPrefix(n.Ref, "#/components/schemas/")
		next, ok := s.Components.Schemas[name]
		if !ok {
			return nil, name, fmt.Errorf("schema %q is not in the transcription", name)
		}
		n = next
	}
	return n, name, nil
}

// validate is a strict subset of JSON-schema validation: unknown object
// fields, wrong JSON types, integers out of their format's range, values
// outside an enum or below a minimum, and missing required fields are all
// errors. Cloud Hypervisor itself rejects unknown fields in some places and
// silently drops them in others; failing on every one keeps the driver
// honest either way.
func (s *openAPI) validate(n *schemaNode, v any, path string) error {
	n, name, err := s.resolve(n)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if n.NotTranscribed {
		return fmt.Errorf("%s: schema %s is not transcribed: the driver is not expected to send it", path, name)
	}
	switch n.Type {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want object (%s), got %s", path, name, jsonKind(v))
		}
		for _, r := range n.Required {
			if _, ok := obj[r]; !ok {
				return fmt.Errorf("%s: required field %q missing (%s)", path, r, name)
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			child := n.Properties[k]
			if child == nil {
				child = n.AdditionalProperties
			}
			if child == nil {
				return fmt.Errorf("%s: unknown field %q (%s has no such property)", path, k, name)
			}
			if err := s.validate(child, obj[k], path+"."+k); err != nil {
				return err
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: want array, got %s", path, jsonKind(v))
		}
		for i, e := range arr {
			if err := s.validate(n.Items, e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: want string, got %s", path, jsonKind(v))
		}
		if len(n.Enum) > 0 && !slices.Contains(n.Enum, str) {
			return fmt.Errorf("%s: %q is not one of %v (%s)", path, str, n.Enum, name)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: want boolean, got %s", path, jsonKind(v))
		}
	case "integer":
		num, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%s: want integer, got %s", path, jsonKind(v))
		}
		i, err := num.Int64()
		if err != nil {
			return fmt.Errorf("%s: want integer, got %s", path, num)
		}
		lo, hi := formatRange(n.Format)
		if float64(i) < lo || float64(i) > hi {
			return fmt.Errorf("%s: %d out of range for %s", path, i, n.Format)
		}
		if n.Minimum != nil && float64(i) < *n.Minimum {
			return fmt.Errorf("%s: %d is below the minimum %v", path, i, *n.Minimum)
		}
		if n.Maximum != nil && float64(i) > *n.Maximum {
			return fmt.Errorf("%s: %d is above the maximum %v", path, i, *n.Maximum)
		}
	default:
		return fmt.Errorf("%s: schema %s has unsupported type %q", path, name, n.Type)
	}
	return nil
}

func formatRange(format string) (float64, float64) {
	switch format {
	case "int8":
		return math.MinInt8, math.MaxInt8
	case "int16":
		return math.MinInt16, math.MaxInt16
	case "int32":
		return math.MinInt32, math.MaxInt32
	case "uint8":
		return 0, math.MaxUint8
	case "uint16":
		return 0, math.MaxUint16
	case "uint32":
		return 0, math.MaxUint32
	}
	return math.MinInt64, math.MaxInt64
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

// TestSchemaCheckerIsStrict proves the checker fails on what it must, so a
// passing driver test means something.
func TestSchemaCheckerIsStrict(t *testing.T) {
	s := mustLoadOpenAPI(t)
	good := `{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":536870912},"payload":{"kernel":"/k"},"vsock":{"cid":3,"socket":"/s"}}`
	if err := s.validateJSON("VmConfig", []byte(good)); err != nil {
		t.Fatalf("valid VmConfig rejected: %v", err)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"unknown top-level field", `{"payload":{"kernel":"/k"},"mrconfigid":"00"}`, `unknown field "mrconfigid"`},
		{"unknown nested field", `{"payload":{"kernel":"/k","mrconfigid":"00"}}`, `$.payload: unknown field "mrconfigid"`},
		{"missing payload", `{"cpus":{"boot_vcpus":1,"max_vcpus":1}}`, `required field "payload"`},
		{"missing max_vcpus", `{"payload":{},"cpus":{"boot_vcpus":1}}`, `required field "max_vcpus"`},
		{"string for integer", `{"payload":{},"vsock":{"cid":"3","socket":"/s"}}`, `$.vsock.cid: want integer, got string`},
		{"fraction for integer", `{"payload":{},"memory":{"size":1.5}}`, `want integer`},
		{"cid below minimum", `{"payload":{},"vsock":{"cid":2,"socket":"/s"}}`, `below the minimum 3`},
		{"boolean as string", `{"payload":{},"platform":{"sev_snp":"true"}}`, `want boolean`},
		{"bad enum", `{"payload":{},"serial":{"mode":"file"}}`, `"file" is not one of`},
		{"untranscribed schema", `{"payload":{},"rng":{"src":"/dev/urandom"}}`, `RngConfig is not transcribed`},
		// Upstream's OpenAPI has no fds: numbers in a body are discarded,
		// descriptors travel with the request (SCM_RIGHTS).
		{"fds in a body", `{"payload":{},"net":[{"fds":[3]}]}`, `$.net[0]: unknown field "fds"`},
		{"uint8 range", `{"payload":{},"disks":[{"path":"/d","pci_device_id":256}]}`, `out of range for uint8`},
		{"not an object", `[]`, `want object`},
	} {
		err := s.validateJSON("VmConfig", []byte(tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestSchemaTranscriptionComplete checks that every schema the driver's
// types name is transcribed with the properties the driver sends.
func TestSchemaTranscriptionComplete(t *testing.T) {
	s := mustLoadOpenAPI(t)
	for name, props := range map[string][]string{
		"VmConfig":        {"cpus", "memory", "payload", "disks", "serial", "console", "vsock", "platform"},
		"CpusConfig":      {"boot_vcpus", "max_vcpus"},
		"MemoryConfig":    {"size"},
		"PayloadConfig":   {"firmware", "kernel", "cmdline", "initramfs", "igvm", "host_data"},
		"DiskConfig":      {"path", "readonly", "id", "serial", "image_type"},
		"ConsoleConfig":   {"mode", "file"},
		"SerialConfig":    {"mode", "file"},
		"VsockConfig":     {"cid", "socket"},
		"PlatformConfig":  {"tdx", "sev_snp"},
		"NetConfig":       {"id", "mac", "num_queues", "tap", "mtu"},
		"VmRemoveDevice":  {"id"},
		"PciDeviceInfo":   {"id", "bdf"},
		"VmmPingResponse": {"build_version", "version", "pid", "features"},
		"VmInfo":          {"config", "state"},
	} {
		n := s.Components.Schemas[name]
		if n == nil || n.NotTranscribed {
			t.Errorf("schema %s missing from the transcription", name)
			continue
		}
		for _, p := range props {
			if n.Properties[p] == nil {
				t.Errorf("%s.%s missing from the transcription", name, p)
			}
		}
	}
	for _, op := range []string{"/vmm.ping", "/vmm.shutdown", "/vm.info", "/vm.create", "/vm.boot", "/vm.shutdown", "/vm.pause", "/vm.resume", "/vm.add-disk", "/vm.add-net", "/vm.remove-device"} {
		if _, ok := s.Paths[op]; !ok {
			t.Errorf("operation %s missing from the transcription", op)
		}
	}
}
