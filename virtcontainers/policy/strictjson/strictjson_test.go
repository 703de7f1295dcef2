package strictjson

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestDecodeRefusesAmbiguousDocuments(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"case variant", `{"args":["cat","/etc/hostname"],"Args":["sh","-c","cat /secret"],"cwd":"/"}`, `spec.Args: unknown field; keys are case-sensitive: write "args"`},
		{"case variant alone", `{"Args":["sh"],"cwd":"/"}`, `spec.Args: unknown field; keys are case-sensitive`},
		{"duplicate", `{"args":["cat"],"args":["sh"],"cwd":"/"}`, "spec.args: key appears twice"},
		{"nested duplicate", `{"args":["x"],"user":{"uid":1,"uid":0},"cwd":"/"}`, "spec.user.uid: key appears twice"},
		{"duplicate in a list", `{"args":["x"],"rlimits":[{"type":"RLIMIT_NOFILE","hard":1,"soft":1,"hard":2}],"cwd":"/"}`, "spec.rlimits[0].hard: key appears twice"},
		{"nested case variant", `{"args":["x"],"capabilities":{"Bounding":["CAP_SYS_ADMIN"]},"cwd":"/"}`, `spec.capabilities.Bounding: unknown field; keys are case-sensitive: write "bounding"`},
		{"unknown", `{"args":["x"],"cwd":"/","privileged":true}`, "spec.privileged: unknown field"},
		{"leading space", ` {"args":["x"],"cwd":"/"}`, "spec: want a JSON object starting with '{' (no leading whitespace)"},
		{"trailing newline", "{\"args\":[\"x\"],\"cwd\":\"/\"}\n", "spec: 1 bytes after the JSON object"},
		{"trailing document", `{"args":["x"],"cwd":"/"}{"args":["sh"]}`, "bytes after the JSON object"},
		{"array", `[{"args":["x"]}]`, "want a JSON object"},
		{"null", `null`, "want a JSON object"},
		{"empty", ``, "want a JSON object"},
		{"wrong type", `{"args":"sh -c id","cwd":"/"}`, "spec.args: JSON string where []string is expected"},
		{"malformed", `{"args":["x"],"cwd":}`, "spec.cwd: malformed JSON"},
		{"unterminated", `{"args":["x"]`, "malformed JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p specs.Process
			err := Decode("spec", []byte(tc.doc), &p)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want invalid argument containing %q", err, tc.want)
			}
		})
	}
}

func TestDecodeAcceptsWhatContainerdSends(t *testing.T) {
	// Inner whitespace, escapes and map keys that differ only in case are
	// unambiguous to every reader.
	doc := "{\"ociVersion\": \"1.2.1\",\n\t\"process\": {\"args\": [\"sh\"], \"cwd\": \"/\", \"env\": [\"\\u0041=1\"]},\n" +
		"\"annotations\": {\"a\": \"1\", \"A\": \"2\"}, \"linux\": {\"sysctl\": {\"kernel.shm_rmid_forced\": \"1\"}}}"
	var s specs.Spec
	if err := Decode("spec", []byte(doc), &s); err != nil {
		t.Fatal(err)
	}
	if s.Process.Env[0] != "A=1" || s.Annotations["A"] != "2" || s.Annotations["a"] != "1" {
		t.Fatalf("decoded %+v", s)
	}
}

type inner struct {
	Shared string `json:"shared"`
	Deep   string `json:"deep"`
}

type outer struct {
	inner
	Shared string `json:"shared"`
	Hidden string `json:"-"`
	Plain  string
	secret string
}

func TestJSONFieldsFollowEncodingJSON(t *testing.T) {
	f := jsonFields(reflectType[outer]())
	for _, name := range []string{"shared", "deep", "Plain"} {
		if _, ok := f[name]; !ok {
			t.Errorf("field %q missing from %v", name, f)
		}
	}
	for _, name := range []string{"Hidden", "-", "secret", "inner"} {
		if _, ok := f[name]; ok {
			t.Errorf("field %q should not be a JSON key", name)
		}
	}
	var o outer
	err := Decode("doc", []byte(`{"shared":"x","deep":"y","Plain":"z"}`), &o)
	if err != nil || o.Shared != "x" || o.Deep != "y" || o.Plain != "z" {
		t.Fatalf("decode = %+v, %v", o, err)
	}
	_ = o.secret
}

func reflectType[T any]() reflect.Type { return reflect.TypeFor[T]() }

// FuzzDecode: no panic; every refusal is InvalidArgument; what is accepted
// decodes to the same value from its canonical encoding, which is accepted
// too (the guest's canonical bytes pass its own check).
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"args":["sh"],"cwd":"/","env":["A=1"],"user":{"uid":1,"additionalGids":[2]}}`,
		`{"args":["a"],"Args":["b"]}`,
		`{"capabilities":{"bounding":["CAP_KILL"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1,"soft":1}]}`,
		` {}`, `{}`, `{"a":{"a":{}}}`, `{"args":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p specs.Process
		if err := Decode("spec", data, &p); err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		canon, err := json.Marshal(&p)
		if err != nil {
			t.Fatal(err)
		}
		var q specs.Process
		if err := Decode("spec", canon, &q); err != nil {
			t.Fatalf("canonical bytes %s refused: %v", canon, err)
		}
		again, _ := json.Marshal(&q)
		if string(again) != string(canon) {
			t.Fatalf("canonical form unstable: %s then %s", canon, again)
		}
	})
}
