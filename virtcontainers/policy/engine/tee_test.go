package engine

import (
	"encoding/json"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/configs/policies"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/policy"
	"github.com/coco-runtime/coco/virtcontainers/policy/policytest"
)

func i64(v int64) *int64 { return &v }

// privileged is what containerd's CRI makes of s for a privileged
// container: every capability, every device allowed, the host's devices,
// writable sysfs and cgroupfs.
func privileged(s *specs.Spec) *specs.Spec {
	all := append(policytest.DefaultCaps(), "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_MODULE")
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
	s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/sev-guest", Type: "c", Major: 10, Minor: 123}}
	for i := range s.Mounts {
		if s.Mounts[i].Type == "sysfs" || s.Mounts[i].Type == "cgroup" {
			s.Mounts[i].Options = []string{"nosuid", "noexec", "nodev", "rw"}
		}
	}
	s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
	return s
}

// A hostile host asks the default TEE policy for containers that could
// reach the TEE's report device, other containers' processes or the
// guest kernel; each is refused, while what containerd sends for an
// ordinary unprivileged container, its pod's pause container and `ctr run`
// passes.
func TestDefaultTEEPinsContainers(t *testing.T) {
	e := mustCompile(t, policies.DefaultTEE)
	edit := func(f func(s *specs.Spec)) *specs.Spec {
		s := policytest.CRISpec("sh")
		f(s)
		return s
	}
	addCap := func(c string) func(s *specs.Spec) {
		return func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, c)
			s.Process.Capabilities.Effective = append(s.Process.Capabilities.Effective, c)
			s.Process.Capabilities.Permitted = append(s.Process.Capabilities.Permitted, c)
		}
	}
	removeNS := func(t specs.LinuxNamespaceType) func(s *specs.Spec) {
		return func(s *specs.Spec) {
			var out []specs.LinuxNamespace
			for _, n := range s.Linux.Namespaces {
				if n.Type != t {
					out = append(out, n)
				}
			}
			s.Linux.Namespaces = out
		}
	}
	setNS := func(t specs.LinuxNamespaceType, path string) func(s *specs.Spec) {
		return func(s *specs.Spec) {
			removeNS(t)(s)
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: t, Path: path})
		}
	}
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		want bool
	}{
		{"cri container", policytest.CRISpec("sh"), true},
		{"pause container", edit(func(s *specs.Spec) {
			s.Process.Args = []string{"/pause"}
			s.Mounts = s.Mounts[:5] // no cgroupfs, no host files
			setNS(specs.IPCNamespace, "")(s)
			setNS(specs.UTSNamespace, "")(s)
		}), true},
		{"ctr run (WithDefaultUnixDevices)", edit(func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices,
				specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i64(1), Minor: i64(3), Access: "rwm"},
				specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i64(136), Access: "rwm"},
				specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i64(5), Minor: i64(2), Access: "rwm"})
		}), true},
		{"ipc sysctl", edit(func(s *specs.Spec) {
			s.Linux.Sysctl = map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ping_group_range": "0 1"}
		}), true},
		{"extra deny rule", edit(func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: false, Type: "b", Access: "m"})
		}), true},
		{"fewer capabilities", edit(func(s *specs.Spec) { s.Process.Capabilities.Bounding = []string{"CAP_KILL"} }), true},

		{"privileged", privileged(policytest.CRISpec("sh")), false},
		{"CAP_SYS_ADMIN", edit(addCap("CAP_SYS_ADMIN")), false},
		{"CAP_SYS_PTRACE", edit(addCap("CAP_SYS_PTRACE")), false},
		{"ambient CAP_SYS_MODULE", edit(func(s *specs.Spec) { s.Process.Capabilities.Ambient = []string{"CAP_SYS_MODULE"} }), false},
		{"no capabilities object", edit(func(s *specs.Spec) { s.Process.Capabilities = nil }), false},
		{"device cgroup allow rwm", edit(func(s *specs.Spec) {
			s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		}), false},
		{"device cgroup allow after deny", edit(func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Access: "rwm"})
		}), false},
		{"misc char devices (sev-guest)", edit(func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: i64(10), Access: "rwm"})
		}), false},
		{"partial deny first", edit(func(s *specs.Spec) {
			s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: false, Type: "b", Access: "rwm"}}
		}), false},
		{"no device rules", edit(func(s *specs.Spec) { s.Linux.Resources.Devices = nil }), false},
		{"device node", edit(func(s *specs.Spec) {
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/sev-guest", Type: "c", Major: 10, Minor: 123}}
		}), false},
		{"pod pid namespace", edit(setNS(specs.PIDNamespace, "/proc/4242/ns/pid")), false},
		{"hostPID", edit(removeNS(specs.PIDNamespace)), false},
		{"hostIPC", edit(removeNS(specs.IPCNamespace)), false},
		{"hostNetwork (no uts)", edit(removeNS(specs.UTSNamespace)), false},
		{"host mount namespace", edit(setNS(specs.MountNamespace, "/proc/1/ns/mnt")), false},
		{"host user namespace", edit(setNS(specs.UserNamespace, "/proc/1/ns/user")), false},
		{"writable sysfs", edit(func(s *specs.Spec) { s.Mounts[4].Options = []string{"nosuid", "rw"} }), false},
		{"writable cgroupfs", edit(func(s *specs.Spec) { s.Mounts[5].Options = []string{"nosuid", "rw"} }), false},
		{"second sysfs", edit(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/host-sys", Type: "sysfs", Source: "sysfs"})
		}), false},
		{"kernel.core_pattern", edit(func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"kernel.core_pattern": "|/bin/sh"} }), false},
		{"no linux section", edit(func(s *specs.Spec) { s.Linux = nil }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(t, e, policytest.Prepare(t, tc.spec), nil); got != tc.want {
				t.Fatalf("PrepareContainerRequest: allowed = %v, want %v", got, tc.want)
			}
		})
	}
}

// containerd's CRI sends a container's whole resources on an update; the
// device rules may not widen there either.
func TestDefaultTEEPinsUpdates(t *testing.T) {
	e := mustCompile(t, policies.DefaultTEE)
	limit := int64(128 << 20)
	for _, tc := range []struct {
		name string
		res  specs.LinuxResources
		want bool
	}{
		{"memory only", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}, true},
		{"cri (spec's rules)", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, Memory: &specs.LinuxMemory{Limit: &limit}}, true},
		{"allow rwm", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}}, false},
		{"allow misc after deny", specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: i64(10), Access: "rwm"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustJSON(t, &tc.res)
			r := &taskAPI.UpdateTaskRequest{ID: "c1", Resources: &anypb.Any{TypeUrl: policy.ResourcesTypeURL, Value: b}}
			if got := decide(t, e, r, nil); got != tc.want {
				t.Fatalf("UpdateTaskRequest: allowed = %v, want %v", got, tc.want)
			}
		})
	}
}

// An owner allows one command; the host execs it with everything else of
// its choosing. Only the container's own process passes (a terminal and
// TERM=xterm aside, as containerd sets them for kubectl exec -t).
func TestExecMustBeTheContainersProcess(t *testing.T) {
	src := strings.Replace(policies.DefaultTEE, `allowed_exec_argv := []`, `allowed_exec_argv := [["cat", "/etc/hostname"]]`, 1)
	e := mustCompile(t, src)
	c := policytest.CRIProcess("sleep", "1000")
	exec := func(f func(p *specs.Process)) *specs.Process {
		p := policytest.CRIProcess("cat", "/etc/hostname")
		f(p)
		return p
	}
	for _, tc := range []struct {
		name string
		p    *specs.Process
		want bool
	}{
		{"containerd's copy", exec(func(*specs.Process) {}), true},
		{"terminal", exec(func(p *specs.Process) {
			p.Terminal = true
			p.Env = append(p.Env, "TERM=xterm")
			p.ConsoleSize = &specs.Box{Height: 24, Width: 80}
		}), true},

		{"root", exec(func(p *specs.Process) { p.User.UID, p.User.GID = 0, 0 }), false},
		{"extra group", exec(func(p *specs.Process) { p.User.AdditionalGids = append(p.User.AdditionalGids, 0) }), false},
		{"LD_PRELOAD", exec(func(p *specs.Process) { p.Env = append(p.Env, "LD_PRELOAD=/tmp/x.so") }), false},
		{"PATH", exec(func(p *specs.Process) { p.Env[0] = "PATH=/tmp" }), false},
		{"TERM other than xterm", exec(func(p *specs.Process) {
			p.Terminal = true
			p.Env = append(p.Env, "TERM=$(id)")
		}), false},
		{"TERM without a terminal", exec(func(p *specs.Process) { p.Env = append(p.Env, "TERM=xterm") }), false},
		{"cwd", exec(func(p *specs.Process) { p.Cwd = "/etc" }), false},
		{"CAP_SYS_ADMIN", exec(func(p *specs.Process) {
			p.Capabilities.Effective = append(p.Capabilities.Effective, "CAP_SYS_ADMIN")
		}), false},
		{"noNewPrivileges off", exec(func(p *specs.Process) { p.NoNewPrivileges = false }), false},
		{"apparmor", exec(func(p *specs.Process) { p.ApparmorProfile = "unconfined" }), false},
		{"selinux", exec(func(p *specs.Process) { p.SelinuxLabel = "system_u:system_r:spc_t:s0" }), false},
		{"rlimits", exec(func(p *specs.Process) {
			p.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1 << 20, Soft: 1 << 20}}
		}), false},
		{"oomScoreAdj", exec(func(p *specs.Process) { p.OOMScoreAdj = nil }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(t, e, policytest.Exec(t, *tc.p), containerFacts(t, c)); got != tc.want {
				t.Fatalf("ExecProcessRequest: allowed = %v, want %v", got, tc.want)
			}
		})
	}
	// Without the container's process (an unknown container) nothing passes.
	if decide(t, e, policytest.Exec(t, *exec(func(*specs.Process) {})), nil) {
		t.Fatal("exec allowed without container_process")
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The owner policy configs/policies/README.md shows: its edits compile
// and do what the README says.
func TestReadmeOwnerPolicy(t *testing.T) {
	src := strings.NewReplacer(
		`allowed_exec_argv := []`, `allowed_exec_argv := [["cat", "/etc/hostname"]]`,
		`allowed_exec_regex := []`, `allowed_exec_regex := [["ls", "-l|-la", "/data(/[a-z0-9._-]+)*"]]`,
		`default ReadStreamRequest := false`, `default ReadStreamRequest := true`,
		`allowed_port_forward_ports := []`, `allowed_port_forward_ports := [8080]`,
	).Replace(policies.DefaultTEE) + `
# One more case of namespace_pinned: the pod's pid namespace, by path.
namespace_pinned(n) if {
	n.type == "pid"
	startswith(n.path, "/proc/")
}
`
	e := mustCompile(t, src)
	shared := policytest.CRISpec("sh")
	shared.Linux.Namespaces[0].Path = "/proc/4242/ns/pid"
	if !decide(t, e, policytest.Prepare(t, shared), nil) {
		t.Error("container in the pod's pid namespace denied")
	}
	if decide(t, e, policytest.Prepare(t, privileged(policytest.CRISpec("sh"))), nil) {
		t.Error("privileged container allowed")
	}
	for port, want := range map[uint32]bool{8080: true, 8081: false, 22: false} {
		if got := decide(t, e, &api.PortForwardRequest{Port: port}, nil); got != want {
			t.Errorf("port-forward to %d: allowed = %v, want %v", port, got, want)
		}
	}
	c := policytest.CRIProcess("sleep", "1000")
	for args, want := range map[string]bool{"ls -la /data/x.1": true, "ls /data": false, "cat /etc/hostname": true, "cat /etc/passwd": false} {
		p := *c
		p.Args = strings.Fields(args)
		if got := decide(t, e, policytest.Exec(t, p), containerFacts(t, c)); got != want {
			t.Errorf("exec %q: allowed = %v, want %v", args, got, want)
		}
	}
}
