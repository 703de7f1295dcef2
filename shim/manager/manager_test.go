package manager

import (
	"bytes"
	"context"
	"slices"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	runtimeopts "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	// containerd's typeurl registration of features.Features, as in containerd.
	_ "github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/shim/options"
	"github.com/coco-runtime/coco/shim/version"
)

// containerd ≤ 2.2 writes the bare runtime options on stdin. containerd's
// shim library decodes those bytes as BootstrapParams without error; the
// manager must notice and rebuild the params from the legacy flags and env,
// keeping the runtime options.
func TestLegacyStdin(t *testing.T) {
	ro, _ := anypb.New(&runtimeopts.Options{ConfigPath: "/etc/coco/x.toml"})
	raw, _ := proto.Marshal(ro)
	var misread bootapi.BootstrapParams
	if err := proto.Unmarshal(raw, &misread); err != nil {
		t.Skipf("this protobuf no longer misreads legacy stdin (%v); nothing to fix", err)
	}
	env := map[string]string{"TTRPC_ADDRESS": "/run/containerd/containerd.sock.ttrpc"}
	m := &manager{cfg: Config{Getenv: func(k string) string { return env[k] }}}
	args := []string{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start"}
	p, opts := m.fixLegacy(&misread, args)
	if p.InstanceID != "abc" || p.Namespace != "k8s.io" || p.ContainerdGrpcAddress != "/run/containerd/containerd.sock" ||
		p.ContainerdTtrpcAddress != env["TTRPC_ADDRESS"] || p.LogLevel != bootapi.LogLevel_LOG_LEVEL_DEBUG {
		t.Fatalf("rebuilt params %+v", p)
	}
	if path, err := options.ConfigPath(runtimeOptions(p, opts)); err != nil || path != "/etc/coco/x.toml" {
		t.Fatalf("legacy runtime options lost: %q, %v", path, err)
	}

	// New-protocol params pass through untouched.
	good := &bootapi.BootstrapParams{InstanceID: "abc", Namespace: "k8s.io"}
	good.AddExtension(ro)
	p, opts = m.fixLegacy(good, args)
	if p != good || opts != nil {
		t.Fatalf("valid params were rewritten: %+v", p)
	}
	if path, _ := options.ConfigPath(runtimeOptions(p, opts)); path != "/etc/coco/x.toml" {
		t.Fatalf("extension options not found: %q", path)
	}
}

func TestLegacyFlags(t *testing.T) {
	got := legacyFlags([]string{"-namespace", "ns", "--id=x", "-debug", "-bundle", "/b", "delete"})
	want := map[string]string{"namespace": "ns", "id": "x", "debug": "", "bundle": "/b"}
	if len(got) != len(want) {
		t.Fatalf("flags %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("flags %v, want %v", got, want)
		}
	}
}

func TestInfo(t *testing.T) {
	m := New(version.RuntimeName, Config{})
	info, err := m.Info(context.Background(), bytes.NewReader(nil))
	if err != nil || info.Name != version.RuntimeName || info.Version.GetVersion() != version.Version {
		t.Fatalf("Info = %v, %v", info, err)
	}
	ro, _ := anypb.New(&runtimeopts.Options{ConfigPath: "/etc/coco/x.toml"})
	raw, _ := proto.Marshal(ro)
	if info, err = m.Info(context.Background(), bytes.NewReader(raw)); err != nil || !proto.Equal(info.Options, ro) {
		t.Fatalf("Info with options = %v, %v", info, err)
	}
	bad, _ := anypb.New(&runtimeopts.Options{ConfigPath: "rel.toml"})
	raw, _ = proto.Marshal(bad)
	if _, err := m.Info(context.Background(), bytes.NewReader(raw)); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("Info with a relative ConfigPath: %v", err)
	}
}

func TestIsPodShim(t *testing.T) {
	const name = "containerd-shim-coco-v2"
	serving := []string{"/usr/local/bin/" + name, "-namespace", "k8s.io", "-id", "pod1", "-address", "/run/containerd/containerd.sock"}
	for _, tc := range []struct {
		argv []string
		want bool
	}{
		{serving, true},
		{append(append([]string{}, serving...), "-debug"), true},
		{append(append([]string{}, serving...), "delete"), false},
		{append(append([]string{}, serving...), "start"), false},
		{[]string{"/usr/bin/other", "-namespace", "k8s.io", "-id", "pod1"}, false},
		{[]string{"/usr/local/bin/" + name, "-namespace", "default", "-id", "pod1"}, false},
		{[]string{"/usr/local/bin/" + name, "-namespace", "k8s.io", "-id", "pod2"}, false},
		{nil, false},
	} {
		if got := isPodShim(tc.argv, name, "k8s.io", "pod1"); got != tc.want {
			t.Errorf("isPodShim(%q) = %v, want %v", tc.argv, got, tc.want)
		}
	}
}

// containerd decodes the features with its own typeurl registry; they must
// come back as runtime-spec's type, naming rro and user namespaces.
func TestInfoFeatures(t *testing.T) {
	m := &manager{name: "io.containerd.coco.v2"}
	info, err := m.Info(context.Background(), bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	v, err := typeurl.UnmarshalAny(info.Features)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := v.(*features.Features)
	if !ok {
		t.Fatalf("features decode as %T", v)
	}
	if !slices.Contains(f.MountOptions, "rro") || !slices.Contains(f.Linux.Namespaces, "user") || !*f.Linux.MountExtensions.IDMap.Enabled {
		t.Fatalf("features %+v", f)
	}
}
