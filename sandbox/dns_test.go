package sandbox

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

func TestResolvConf(t *testing.T) {
	got, err := (&DNSConfig{Servers: []string{"10.96.0.10", "fd00::a"}, Searches: []string{"ns.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5"}}).resolvConf()
	if err != nil {
		t.Fatal(err)
	}
	want := "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5\n"
	if got != want {
		t.Fatalf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
	for _, bad := range []*DNSConfig{
		{Servers: []string{"dns.example"}},
		{Searches: []string{"a\nnameserver 6.6.6.6"}},
		{Options: []string{""}},
	} {
		if _, err := bad.resolvConf(); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "dns_config.") {
			t.Errorf("%+v: err = %v, want one naming the field", bad, err)
		}
	}
}

func TestAddResolvConf(t *testing.T) {
	dns := &DNSConfig{Servers: []string{"10.0.0.10"}}
	spec := []byte(`{"ociVersion":"1.3.0","mounts":[{"destination":"/proc","type":"proc"}],"x-future":1}`)
	s := &vmSandbox{opts: Options{SandboxAPI: true, DNS: dns}}
	prep := &api.PrepareContainerRequest{ContainerId: "c1", Spec: spec}
	if err := s.addResolvConf(prep, &specs.Spec{}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Mounts  []specs.Mount `json:"mounts"`
		Unknown int           `json:"x-future"`
	}
	if err := json.Unmarshal(prep.Spec, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Mounts) != 2 || doc.Mounts[1].Destination != "/etc/resolv.conf" || doc.Unknown != 1 {
		t.Fatalf("spec = %s", prep.Spec)
	}
	if len(prep.Files) != 1 || string(prep.Files[0].Content) != "nameserver 10.0.0.10\n" {
		t.Fatalf("files = %v", prep.Files)
	}
	// A container with its own resolv.conf mount, or a pod with a pause
	// container (containerd provides the file), is left alone.
	for _, tc := range []struct {
		s  *vmSandbox
		sp *specs.Spec
	}{
		{s, &specs.Spec{Mounts: []specs.Mount{{Destination: "/etc/resolv.conf"}}}},
		{&vmSandbox{opts: Options{DNS: dns}}, &specs.Spec{}},
	} {
		prep := &api.PrepareContainerRequest{ContainerId: "c1", Spec: spec}
		if err := tc.s.addResolvConf(prep, tc.sp); err != nil || string(prep.Spec) != string(spec) || len(prep.Files) != 0 {
			t.Errorf("changed: err %v, spec %s, files %v", err, prep.Spec, prep.Files)
		}
	}
}
