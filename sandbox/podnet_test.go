package sandbox

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestHostNetwork(t *testing.T) {
	withNet := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}}}
	noNet := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}}}}
	for _, tc := range []struct {
		name string
		opts Options
		host bool
	}{
		{"cri pod", Options{NetNSPath: "/var/run/netns/cni-1", Spec: noNet}, false},
		{"sandbox api pod", Options{NetNSPath: "/var/run/netns/cni-1", SandboxAPI: true}, false},
		{"sandbox api hostNetwork", Options{SandboxAPI: true}, true},
		{"podsandbox hostNetwork", Options{Spec: noNet}, true},
		{"ctr run: own namespace, no CNI", Options{Spec: withNet}, false},
		{"no spec", Options{}, false},
	} {
		if got := hostNetwork(tc.opts); got != tc.host {
			t.Errorf("%s: hostNetwork = %v, want %v", tc.name, got, tc.host)
		}
	}
	err := checkHostNetwork(Options{ID: "p1", SandboxAPI: true})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "hostNetwork") {
		t.Fatalf("err = %v", err)
	}
}
