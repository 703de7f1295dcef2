package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/sandbox/network"
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

// TestCleanupTearsDownNetwork: after a shim crash, `delete` (Cleanup) finds
// the pod's namespace in the state file and removes the redirects there;
// the tap went with the VMM that held it.
func TestCleanupTearsDownNetwork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	name := fmt.Sprintf("coco-cleanup-%d", os.Getpid())
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	run("ip", "-n", name, "link", "set", "eth0", "up")
	nsPath := filepath.Join("/var/run/netns", name)
	pod, err := network.Netlink{}.Setup(context.Background(), nsPath)
	if err != nil {
		t.Fatal(err)
	}
	pod.Close() // the VMM died: its tap is gone, the redirects are not
	if out := run("tc", "-n", name, "filter", "show", "dev", "eth0", "ingress"); !strings.Contains(out, "mirred") {
		t.Fatalf("no redirect after Setup:\n%s", out)
	}
	dir := filepath.Join(t.TempDir(), "pod")
	os.MkdirAll(dir, 0o700)
	if err := writeState(dir, state{ID: "pod", NetNS: nsPath}); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	if out := run("tc", "-n", name, "qdisc", "show", "dev", "eth0"); strings.Contains(out, "ingress") {
		t.Errorf("ingress qdisc left after Cleanup:\n%s", out)
	}
}

// countingPlumber records Setup calls; it makes nothing.
type countingPlumber struct{ setups int }

func (p *countingPlumber) Setup(context.Context, string) (*network.Pod, error) {
	p.setups++
	return &network.Pod{}, nil
}
func (p *countingPlumber) Teardown(context.Context, string) error { return nil }

// TestInterfacesNone: a class with [network] interfaces = "none" gives the
// guest no NIC even though CNI made interfaces in the pod's namespace.
func TestInterfacesNone(t *testing.T) {
	for _, tc := range []struct {
		interfaces string
		setups     int
	}{{"cni", 1}, {"none", 0}} {
		cfg := &configs.Config{}
		cfg.Network.Interfaces = tc.interfaces
		p := &countingPlumber{}
		s := &vmSandbox{opts: Options{ID: "p1", NetNSPath: "/var/run/netns/cni-1", Config: cfg}, plumber: p}
		if _, err := s.plumbNetwork(context.Background()); err != nil {
			t.Fatalf("interfaces = %q: %v", tc.interfaces, err)
		}
		if p.setups != tc.setups {
			t.Errorf("interfaces = %q: %d Setup calls, want %d", tc.interfaces, p.setups, tc.setups)
		}
	}
}
