package options

import (
	"path/filepath"
	"strings"
	"testing"

	runcopts "github.com/containerd/containerd/api/types/runc/options"
	runtimeopts "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	criapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestClassify(t *testing.T) {
	sid := "4f1c0a" // CRI ids are hex
	for _, c := range []struct {
		name    string
		id      string
		ann     map[string]string
		want    Role
		errWant string // substring of the error; "" = no error
	}{
		{"plain ctr container is its own pod", "c1", nil, Role{SandboxID: "c1", IsSandbox: true}, ""},
		{"CRI sandbox", sid, map[string]string{ContainerTypeAnnotation: "sandbox", SandboxIDAnnotation: sid}, Role{SandboxID: sid, IsSandbox: true}, ""},
		{"CRI workload", "c2", map[string]string{ContainerTypeAnnotation: "container", SandboxIDAnnotation: sid}, Role{SandboxID: sid}, ""},
		{"sandbox id only", "c3", map[string]string{SandboxIDAnnotation: sid}, Role{SandboxID: sid}, ""},
		{"workload without sandbox id", "c4", map[string]string{ContainerTypeAnnotation: "container"}, Role{}, SandboxIDAnnotation},
		{"unknown container type", "c5", map[string]string{ContainerTypeAnnotation: "vm", SandboxIDAnnotation: sid}, Role{}, ContainerTypeAnnotation},
		{"sandbox claiming another pod", "c6", map[string]string{ContainerTypeAnnotation: "sandbox", SandboxIDAnnotation: sid}, Role{}, SandboxIDAnnotation},
		{"workload as its own sandbox", sid, map[string]string{ContainerTypeAnnotation: "container", SandboxIDAnnotation: sid}, Role{}, SandboxIDAnnotation},
		{"path in sandbox id", "c7", map[string]string{SandboxIDAnnotation: "../../etc"}, Role{}, SandboxIDAnnotation},
		{"bad container id", "a/b", nil, Role{}, "container id"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Classify(c.id, c.ann)
			if c.errWant != "" {
				if err == nil || !strings.Contains(err.Error(), c.errWant) {
					t.Fatalf("err = %v, want one naming %q", err, c.errWant)
				}
				if !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("Classify = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestConfigPath(t *testing.T) {
	for _, c := range []struct {
		name    string
		opts    *anypb.Any
		want    string
		errWant string
	}{
		{"none", nil, "", ""},
		{"CRI ConfigPath", mustAny(t, &runtimeopts.Options{ConfigPath: "/etc/coco/x.toml"}), "/etc/coco/x.toml", ""},
		{"path is cleaned", mustAny(t, &runtimeopts.Options{ConfigPath: "/etc//coco/../coco/x.toml"}), "/etc/coco/x.toml", ""},
		{"relative path", mustAny(t, &runtimeopts.Options{ConfigPath: "x.toml"}), "", "ConfigPath"},
		{"table forwarded as body", mustAny(t, &runtimeopts.Options{ConfigBody: []byte(`config_path = "/opt/c.toml"`)}), "/opt/c.toml", ""},
		{"empty table", mustAny(t, &runtimeopts.Options{ConfigBody: []byte("\n")}), "", ""},
		{"typo in table", mustAny(t, &runtimeopts.Options{ConfigBody: []byte(`ConfigPth = "/x"`)}), "", "ConfigPth"},
		{"wrong type in table", mustAny(t, &runtimeopts.Options{ConfigBody: []byte(`ConfigPath = 3`)}), "", "must be a string"},
		{"broken table", mustAny(t, &runtimeopts.Options{ConfigBody: []byte(`ConfigPath = `)}), "", "runtime options table"},
		{"runc options ignored", mustAny(t, &runcopts.Options{BinaryName: "runc"}), "", ""},
		{"unknown type", &anypb.Any{TypeUrl: "example.com/Other", Value: []byte{1}}, "", "example.com/Other"},
		{"garbage", &anypb.Any{TypeUrl: "type.googleapis.com/runtimeoptions.v1.Options", Value: []byte{0xff, 0xff}}, "", "runtime options"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ConfigPath(c.opts)
			if c.errWant != "" {
				if err == nil || !strings.Contains(err.Error(), c.errWant) || !errdefs.IsInvalidArgument(err) {
					t.Fatalf("err = %v, want InvalidArgument naming %q", err, c.errWant)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ConfigPath = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestResolveConfigPath(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == ConfigEnv {
				return v
			}
			return ""
		}
	}
	if got, _ := ResolveConfigPath("/a.toml", env("/b.toml")); got != "/a.toml" {
		t.Fatalf("option must win over env, got %q", got)
	}
	if got, _ := ResolveConfigPath("", env("/b.toml")); got != "/b.toml" {
		t.Fatalf("env must win over default, got %q", got)
	}
	if got, err := ResolveConfigPath("", env("")); got != "" || err != nil {
		t.Fatalf("default: %q, %v", got, err)
	}
	if _, err := ResolveConfigPath("", env("rel.toml")); err == nil || !strings.Contains(err.Error(), ConfigEnv) {
		t.Fatalf("relative $%s: %v", ConfigEnv, err)
	}
}

func TestDecodePodConfig(t *testing.T) {
	a := mustAny(t, &criapi.PodSandboxConfig{Hostname: "web", Annotations: map[string]string{"io.katacontainers.config.hypervisor.cc_init_data": "H4sI"}})
	pc, err := DecodePodConfig(a)
	if err != nil || pc.Hostname != "web" || pc.Annotations["io.katacontainers.config.hypervisor.cc_init_data"] != "H4sI" {
		t.Fatalf("DecodePodConfig = %+v, %v", pc, err)
	}
	if _, err := DecodePodConfig(mustAny(t, &runcopts.Options{})); err == nil {
		t.Fatal("a runc Options was taken for a pod config")
	}
	if pc, err := DecodePodConfig(nil); err != nil || pc.Annotations != nil {
		t.Fatalf("nil options: %+v, %v", pc, err)
	}
}

func TestSaveRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if a, err := ReadSaved(dir); a != nil || err != nil {
		t.Fatalf("nothing saved yet: %v, %v", a, err)
	}
	want := mustAny(t, &runtimeopts.Options{ConfigPath: "/etc/coco/x.toml"})
	if err := Save(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSaved(dir)
	if err != nil || !proto.Equal(got, want) {
		t.Fatalf("ReadSaved = %v, %v", got, err)
	}
	if p, _ := ConfigPath(got); p != "/etc/coco/x.toml" {
		t.Fatalf("saved options lost ConfigPath: %q", p)
	}
}

func TestReadSpec(t *testing.T) {
	if s, err := ReadSpec(t.TempDir()); s != nil || err != nil {
		t.Fatalf("bundle without config.json: %v, %v", s, err)
	}
	if _, err := ParseSpec([]byte("{")); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("broken config.json: %v", err)
	}
	if _, err := ParseSpec(make([]byte, maxSpecSize+1)); err == nil {
		t.Fatal("oversized config.json accepted")
	}
}

// FuzzSpecAnnotations feeds arbitrary config.json bytes and ids through the
// parsing the shim does on `start`, `delete` and Create. It must never panic,
// and whatever it accepts must be a usable pod id.
func FuzzSpecAnnotations(f *testing.F) {
	f.Add([]byte(`{"annotations":{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"abc"}}`), "abc")
	f.Add([]byte(`{"annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"abc"}}`), "c1")
	f.Add([]byte(`{"annotations":{"io.kubernetes.cri.sandbox-id":"../x"}}`), "c1")
	f.Add([]byte(`{"linux":{"namespaces":[{"type":"network","path":"/var/run/netns/x"}]}}`), "c1")
	f.Add([]byte(`null`), "")
	f.Fuzz(func(t *testing.T, data []byte, id string) {
		s, err := ParseSpec(data)
		if err != nil {
			return
		}
		_ = NetNSPath(s)
		r, err := Classify(id, s.Annotations)
		if err != nil {
			return
		}
		if identifiers.Validate(r.SandboxID) != nil {
			t.Fatalf("accepted unusable sandbox id %q", r.SandboxID)
		}
		if r.IsSandbox && r.SandboxID != id {
			t.Fatalf("sandbox container %q placed in pod %q", id, r.SandboxID)
		}
		if g, err := GroupID(id, s.Annotations); err != nil || g != r.SandboxID {
			t.Fatalf("GroupID = %q, %v; Classify said %q", g, err, r.SandboxID)
		}
	})
}

// FuzzRuntimeOptions feeds arbitrary runtime options (any of the type URLs
// containerd may send, or another) through ConfigPath and DecodePodConfig.
func FuzzRuntimeOptions(f *testing.F) {
	seed := func(m proto.Message) []byte {
		b, _ := proto.Marshal(m)
		return b
	}
	f.Add(uint8(0), seed(&runtimeopts.Options{ConfigPath: "/etc/coco/x.toml"}))
	f.Add(uint8(0), seed(&runtimeopts.Options{ConfigBody: []byte(`ConfigPath = "/x.toml"`)}))
	f.Add(uint8(0), seed(&runtimeopts.Options{ConfigBody: []byte(`[a]
b = 1`)}))
	f.Add(uint8(1), seed(&runcopts.Options{BinaryName: "runc"}))
	f.Add(uint8(2), seed(&criapi.PodSandboxConfig{Hostname: "h", Annotations: map[string]string{"a": "b"}}))
	f.Add(uint8(3), []byte("junk"))
	urls := []string{
		"type.googleapis.com/runtimeoptions.v1.Options",
		"containerd.runc.v1.Options",
		"type.googleapis.com/runtime.v1.PodSandboxConfig",
		"example.com/unknown",
	}
	f.Fuzz(func(t *testing.T, kind uint8, value []byte) {
		a := &anypb.Any{TypeUrl: urls[int(kind)%len(urls)], Value: value}
		p, err := ConfigPath(a)
		if err == nil && p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsRune(p, 0)) {
			t.Fatalf("accepted ConfigPath %q", p)
		}
		_, _ = DecodePodConfig(a)
	})
}
