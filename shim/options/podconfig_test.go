package options

import (
	"maps"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	criapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const podConfigURL = "type.googleapis.com/" + podSandboxConfigName

// TestPodConfigMatchesCRI decodes full CRI pod configs (every field the
// shim skips set too) and compares with what the generated CRI type reads.
func TestPodConfigMatchesCRI(t *testing.T) {
	full := &criapi.PodSandboxConfig{
		Metadata:     &criapi.PodSandboxMetadata{Name: "web", Uid: "u1", Namespace: "default", Attempt: 3},
		Hostname:     "web-0",
		LogDirectory: "/var/log/pods/x",
		DnsConfig:    &criapi.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"svc"}, Options: []string{"ndots:5"}},
		PortMappings: []*criapi.PortMapping{{ContainerPort: 80, HostPort: 8080}},
		Labels:       map[string]string{"app": "web"},
		Annotations:  map[string]string{"io.katacontainers.config.hypervisor.cc_init_data": "H4sI", "empty": "", "": "no key"},
		Linux: &criapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods", Sysctls: map[string]string{"net.ipv4.ip_forward": "1"},
			SecurityContext: &criapi.LinuxSandboxSecurityContext{Privileged: true}},
	}
	for name, m := range map[string]*criapi.PodSandboxConfig{
		"full":              full,
		"empty":             {},
		"hostname only":     {Hostname: "h"},
		"annotations only":  {Annotations: map[string]string{"a": "b"}},
		"empty dns config":  {DnsConfig: &criapi.DNSConfig{}},
		"unicode and empty": {Hostname: "hôte", Annotations: map[string]string{"ключ": "значение"}},
	} {
		t.Run(name, func(t *testing.T) {
			a := mustAny(t, m)
			got, err := DecodePodConfig(a)
			if err != nil {
				t.Fatal(err)
			}
			if got.Hostname != m.GetHostname() || !maps.Equal(got.Annotations, m.GetAnnotations()) {
				t.Fatalf("got %+v, want hostname %q annotations %v", got, m.GetHostname(), m.GetAnnotations())
			}
			if d := m.GetDnsConfig(); (d == nil) != (got.DNS == nil) || d != nil && (!slices.Equal(got.DNS.Servers, d.Servers) ||
				!slices.Equal(got.DNS.Searches, d.Searches) || !slices.Equal(got.DNS.Options, d.Options)) {
				t.Fatalf("dns = %+v, want %v", got.DNS, d)
			}
		})
	}
}

func TestPodConfigWire(t *testing.T) {
	str := func(b []byte, num protowire.Number, s string) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendString(b, s)
	}
	entry := func(k, v string) []byte { return str(str(nil, mapKey, k), mapValue, v) }
	ann := func(b []byte, k, v string) []byte {
		b = protowire.AppendTag(b, pscAnnotations, protowire.BytesType)
		return protowire.AppendBytes(b, entry(k, v))
	}
	var repeated []byte
	repeated = str(repeated, pscHostname, "first")
	repeated = ann(repeated, "k", "1")
	repeated = str(repeated, pscHostname, "last")
	repeated = ann(repeated, "k", "2")
	// A hostname sent as a varint is an unknown field to protobuf, not an error.
	repeated = protowire.AppendVarint(protowire.AppendTag(repeated, pscHostname, protowire.VarintType), 7)

	for _, c := range []struct {
		name     string
		value    []byte
		wantErr  bool
		hostname string
		ann      map[string]string
	}{
		{name: "last value wins", value: repeated, hostname: "last", ann: map[string]string{"k": "2"}},
		{name: "entry without value", value: protowire.AppendBytes(protowire.AppendTag(nil, pscAnnotations, protowire.BytesType), str(nil, mapKey, "k")), ann: map[string]string{"k": ""}},
		{name: "truncated string", value: str(nil, pscHostname, "hostname")[:5], wantErr: true},
		{name: "truncated tag", value: []byte{0x80}, wantErr: true},
		{name: "bad UTF-8 hostname", value: str(nil, pscHostname, "\xff"), wantErr: true},
		{name: "bad UTF-8 annotation", value: ann(nil, "k", "\xc3"), wantErr: true},
		{name: "truncated map entry", value: protowire.AppendBytes(protowire.AppendTag(nil, pscAnnotations, protowire.BytesType), entry("key", "v")[:3]), wantErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodePodConfig(&anypb.Any{TypeUrl: podConfigURL, Value: c.value})
			var ref criapi.PodSandboxConfig
			refErr := proto.Unmarshal(c.value, &ref)
			if (err != nil) != c.wantErr || (refErr != nil) != c.wantErr {
				t.Fatalf("err = %v (CRI type: %v), want error: %v", err, refErr, c.wantErr)
			}
			if c.wantErr {
				return
			}
			if got.Hostname != c.hostname || !maps.Equal(got.Annotations, c.ann) ||
				got.Hostname != ref.GetHostname() || !maps.Equal(got.Annotations, ref.GetAnnotations()) {
				t.Fatalf("got %+v; want %q %v; CRI type read %q %v", got, c.hostname, c.ann, ref.GetHostname(), ref.GetAnnotations())
			}
		})
	}
}

// FuzzPodConfig checks the wire decoder against the generated CRI type:
// whatever the CRI type accepts, DecodePodConfig reads the same hostname
// and annotations from.
func FuzzPodConfig(f *testing.F) {
	for _, m := range []*criapi.PodSandboxConfig{
		{Hostname: "h", Annotations: map[string]string{"a": "b"}},
		{Metadata: &criapi.PodSandboxMetadata{Name: "n"}, Labels: map[string]string{"l": "v"}, Linux: &criapi.LinuxPodSandboxConfig{CgroupParent: "/x"}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		got, err := DecodePodConfig(&anypb.Any{TypeUrl: podConfigURL, Value: value})
		var ref criapi.PodSandboxConfig
		if proto.Unmarshal(value, &ref) != nil {
			return // the wire decoder may accept what it skips (e.g. bad UTF-8 in metadata)
		}
		if err != nil {
			t.Fatalf("CRI type accepts %x, DecodePodConfig: %v", value, err)
		}
		if got.Hostname != ref.GetHostname() || !maps.Equal(got.Annotations, ref.GetAnnotations()) {
			t.Fatalf("got %+v; CRI type read %q %v", got, ref.GetHostname(), ref.GetAnnotations())
		}
	})
}
