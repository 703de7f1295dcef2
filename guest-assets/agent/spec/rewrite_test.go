package spec

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hostSpec is shaped like what containerd's CRI writes for an app container
// of a pod: namespaces of the pause container by /proc path, CRI's bind
// mounts, a kubepods cgroup, an AppArmor profile.
func hostSpec(t testing.TB) []byte {
	s := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"sh", "-c", "echo hi"}, Cwd: "/", ApparmorProfile: "cri-containerd.apparmor.d"},
		Root:    &specs.Root{Path: "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1/rootfs", Readonly: true},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/containerd/sandboxes/p1/hosts", Options: []string{"rbind", "rprivate", "ro"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: "/var/lib/containerd/sandboxes/p1/resolv.conf", Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/sandboxes/p1/shm", Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/data", Type: "bind", Source: "/var/lib/kubelet/pods/x/volumes/empty", Options: []string{"rbind", "rw"}},
		},
		Hooks: &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/usr/bin/nvidia-hook"}}},
		Linux: &specs.Linux{
			CgroupsPath: "kubepods-besteffort-pod1.slice:cri-containerd:c1",
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace, Path: "/proc/4242/ns/ipc"},
				{Type: specs.UTSNamespace, Path: "/proc/4242/ns/uts"},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1234"},
			},
			Sysctl:  map[string]string{"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"},
			Devices: []specs.LinuxDevice{{Path: "/dev/nvidia0", Type: "c", Major: 195}},
		},
	}
	b, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRewriteAppContainer(t *testing.T) {
	res, err := Rewrite(hostSpec(t), Options{
		ContainerID:  "c1",
		PodNamespace: SandboxNamespaces(17),
		Files:        map[string]string{"/etc/hosts": "/run/coco/bundles/c1/files/f0", "/etc/resolv.conf": "/run/coco/bundles/c1/files/f1"},
		ShmDir:       "/run/coco/shm",
		CgroupParent: "/coco",
	})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Spec
	if s.Root.Path != "rootfs" || !s.Root.Readonly {
		t.Errorf("root = %+v, want rootfs read-only", s.Root)
	}
	if s.Linux.CgroupsPath != "/coco/c1" {
		t.Errorf("cgroupsPath = %q", s.Linux.CgroupsPath)
	}
	want := map[specs.LinuxNamespaceType]string{
		specs.PIDNamespace:   "", // not shared: the spec gave no path
		specs.IPCNamespace:   "/proc/17/ns/ipc",
		specs.UTSNamespace:   "/proc/17/ns/uts",
		specs.MountNamespace: "",
	}
	got := map[specs.LinuxNamespaceType]string{}
	for _, ns := range s.Linux.Namespaces {
		got[ns.Type] = ns.Path
	}
	if len(got) != len(want) {
		t.Errorf("namespaces = %v, want %v (network dropped)", got, want)
	}
	for k, v := range want {
		if p, ok := got[k]; !ok || p != v {
			t.Errorf("namespace %s path = %q (present %v), want %q", k, p, ok, v)
		}
	}
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	if m := mounts["/etc/hosts"]; m.Source != "/run/coco/bundles/c1/files/f0" || m.Type != "bind" || !contains(m.Options, "ro") {
		t.Errorf("/etc/hosts = %+v", m)
	}
	if m := mounts["/dev/shm"]; m.Source != "/run/coco/shm" {
		t.Errorf("/dev/shm = %+v, want the pod shm", m)
	}
	if m := mounts["/data"]; m.Type != "tmpfs" || strings.HasPrefix(m.Source, "/var") {
		t.Errorf("/data = %+v, want tmpfs instead of the host dir", m)
	}
	if s.Hooks != nil || s.Process.ApparmorProfile != "" || len(s.Linux.Devices) != 0 {
		t.Errorf("host-only parts kept: hooks=%v apparmor=%q devices=%v", s.Hooks, s.Process.ApparmorProfile, s.Linux.Devices)
	}
	if _, ok := s.Linux.Sysctl["net.ipv4.ip_forward"]; ok {
		t.Error("net.* sysctl kept although containers share the VM netns")
	}
	if s.Linux.Sysctl["kernel.shm_rmid_forced"] != "1" {
		t.Error("ipc sysctl dropped")
	}
	if len(res.Warnings) < 4 {
		t.Errorf("warnings = %q, want the dropped parts named", res.Warnings)
	}
}

// With a volume root, a host directory becomes the pod's guest directory
// for that path: two containers mounting one emptyDir share it, and the
// host path itself never names a guest path.
func TestRewriteSharedVolumes(t *testing.T) {
	dirOf := func(id string) (string, []string) {
		res, err := Rewrite(hostSpec(t), Options{ContainerID: id, VolumeRoot: "/run/coco/volumes", PodNamespace: SandboxNamespaces(9),
			Files: map[string]string{"/etc/hosts": "/run/coco/bundles/" + id + "/files/f0", "/etc/resolv.conf": "/run/coco/bundles/" + id + "/files/f1"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Spec.Mounts {
			if m.Destination == "/data" {
				if m.Type != "bind" || !contains(m.Options, "rw") {
					t.Errorf("/data = %+v", m)
				}
				return m.Source, res.VolumeDirs
			}
		}
		t.Fatal("no /data mount")
		return "", nil
	}
	a, dirs := dirOf("c1")
	b, _ := dirOf("c2")
	if a != b || !strings.HasPrefix(a, "/run/coco/volumes/") || strings.Contains(a, "kubelet") {
		t.Fatalf("guest dirs %q and %q: want one dir under /run/coco/volumes named by a digest", a, b)
	}
	if len(dirs) != 1 || dirs[0] != a {
		t.Fatalf("VolumeDirs = %q, want [%q]", dirs, a)
	}
	if VolumeKey("/x/../y") != VolumeKey("/y") || VolumeKey("/y") == VolumeKey("/z") {
		t.Fatal("VolumeKey must name a cleaned path, one per path")
	}
}

func TestRewriteSharedPIDAndSandbox(t *testing.T) {
	var s specs.Spec
	json.Unmarshal(hostSpec(t), &s)
	s.Linux.Namespaces[0].Path = "/proc/4242/ns/pid"
	s.Mounts = s.Mounts[:1]
	b, _ := json.Marshal(&s)

	res, err := Rewrite(b, Options{ContainerID: "c1", PodNamespace: SandboxNamespaces(9)})
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Spec.Linux.Namespaces[0]; p.Type != specs.PIDNamespace || p.Path != "/proc/9/ns/pid" {
		t.Errorf("pid ns = %+v, want the sandbox's", p)
	}
	// The sandbox container gets new namespaces and the agent's pause.
	res, err = Rewrite(b, Options{ContainerID: "pod", Sandbox: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range res.Spec.Linux.Namespaces {
		if ns.Path != "" {
			t.Errorf("sandbox namespace %s joins %q", ns.Type, ns.Path)
		}
	}
	if a := res.Spec.Process.Args; len(a) != 1 || a[0] != PauseBinary {
		t.Errorf("sandbox args = %q", a)
	}
	// Joining without a running sandbox container is a precondition error.
	if _, err := Rewrite(b, Options{ContainerID: "c1"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("join without sandbox: err = %v, want FailedPrecondition", err)
	}
}

// Without a sandbox container (containerd's sandbox API) ipc and uts joins
// stay in the VM's namespaces, and the pid join asks for the holder once
// a container joins it; a holder that cannot start fails the container.
func TestRewriteVMNamespaces(t *testing.T) {
	var s specs.Spec
	json.Unmarshal(hostSpec(t), &s)
	s.Mounts = s.Mounts[:1]
	private, _ := json.Marshal(&s) // own pid namespace, pod ipc and uts
	s.Linux.Namespaces[0].Path = "/proc/4242/ns/pid"
	shared, _ := json.Marshal(&s)

	asked := 0
	holder := func() (int, error) { asked++; return 33, nil }
	res, err := Rewrite(private, Options{ContainerID: "c1", PodNamespace: VMNamespaces(holder)})
	if err != nil {
		t.Fatal(err)
	}
	got := map[specs.LinuxNamespaceType]string{}
	for _, ns := range res.Spec.Linux.Namespaces {
		got[ns.Type] = ns.Path
	}
	if _, ok := got[specs.IPCNamespace]; ok {
		t.Errorf("ipc namespace entry kept (%q): the container should stay in the VM's", got[specs.IPCNamespace])
	}
	if _, ok := got[specs.UTSNamespace]; ok {
		t.Errorf("uts namespace entry kept (%q): the container should stay in the VM's", got[specs.UTSNamespace])
	}
	if p, ok := got[specs.PIDNamespace]; !ok || p != "" {
		t.Errorf("pid namespace = %q (present %v), want a new one", p, ok)
	}
	if asked != 0 {
		t.Errorf("pid holder started %d times for a container with its own pid namespace", asked)
	}

	res, err = Rewrite(shared, Options{ContainerID: "c2", PodNamespace: VMNamespaces(holder)})
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Spec.Linux.Namespaces[0]; p.Type != specs.PIDNamespace || p.Path != "/proc/33/ns/pid" || asked != 1 {
		t.Errorf("pid ns = %+v after %d holder calls, want the holder's once", p, asked)
	}

	failing := func() (int, error) { return 0, fmt.Errorf("pause: %w", errdefs.ErrUnavailable) }
	if _, err := Rewrite(shared, Options{ContainerID: "c3", PodNamespace: VMNamespaces(failing)}); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "pid namespace") {
		t.Errorf("failing holder: err = %v, want its Unavailable error, naming the pid namespace", err)
	}
	vmPID := func(specs.LinuxNamespaceType) (string, error) { return "", nil }
	if _, err := Rewrite(shared, Options{ContainerID: "c4", PodNamespace: vmPID}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("VM pid namespace: err = %v, want FailedPrecondition (it holds the agent)", err)
	}
}

func TestRewriteRejects(t *testing.T) {
	base := func() specs.Spec {
		var s specs.Spec
		json.Unmarshal(hostSpec(t), &s)
		return s
	}
	cases := []struct {
		name  string
		edit  func(*specs.Spec)
		opts  Options
		field string
	}{
		{"device mount", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "ext4", Source: "/dev/vda"})
		}, Options{}, "mounts[5].type"},
		{"relative destination", func(s *specs.Spec) { s.Mounts[0].Destination = "proc" }, Options{}, "mounts[0].destination"},
		{"no process", func(s *specs.Spec) { s.Process = nil }, Options{}, "process"},
		{"pod user ns without mappings", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/1/ns/user"})
		}, Options{Sandbox: true}, "namespaces[5].path"},
		{"unknown ns", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: "bogus"})
		}, Options{}, "namespaces[5].type"},
		{"unused file", func(s *specs.Spec) {}, Options{Files: map[string]string{"/nowhere": "/x"}}, "files"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := base()
			c.edit(&s)
			b, _ := json.Marshal(&s)
			c.opts.ContainerID = "c1"
			c.opts.PodNamespace = SandboxNamespaces(3)
			_, err := Rewrite(b, c.opts)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.field) {
				t.Errorf("err = %v, want InvalidArgument naming %s", err, c.field)
			}
		})
	}
	for _, raw := range []string{"", "{", "[]", `{"process":"x"}`} {
		if _, err := Rewrite([]byte(raw), Options{ContainerID: "c1"}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Rewrite(%q) err = %v, want InvalidArgument", raw, err)
		}
	}
	if _, err := Rewrite(hostSpec(t), Options{ContainerID: "../etc"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad id: err = %v", err)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// FuzzRewrite: any bytes either fail with an errdefs class or produce a spec
// whose root is the bundle's rootfs, whose cgroup is under the guest parent,
// and whose namespaces join only the sandbox's.
func FuzzRewrite(f *testing.F) {
	f.Add(hostSpec(f), false, 5)
	f.Add([]byte(`{"process":{"args":["a"],"cwd":"/"},"mounts":[{"destination":"/a","type":"bind","source":"/h"}]}`), false, 0)
	f.Add([]byte(`{"process":{"cwd":"/"},"linux":{"namespaces":[{"type":"pid","path":"/x"}]}}`), true, 1)
	f.Fuzz(func(t *testing.T, raw []byte, sandbox bool, pid int) {
		res, err := Rewrite(raw, Options{ContainerID: "c1", Sandbox: sandbox, PodNamespace: SandboxNamespaces(pid), ShmDir: "/run/coco/shm", Files: map[string]string{}})
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		s := res.Spec
		if s.Root.Path != "rootfs" || s.Linux.CgroupsPath != "/coco/c1" {
			t.Fatalf("root %q cgroup %q", s.Root.Path, s.Linux.CgroupsPath)
		}
		for _, ns := range s.Linux.Namespaces {
			if ns.Path != "" && !strings.HasPrefix(ns.Path, "/proc/") {
				t.Fatalf("namespace %s joins %q", ns.Type, ns.Path)
			}
			if ns.Type == specs.NetworkNamespace {
				t.Fatal("network namespace kept")
			}
		}
		for _, m := range s.Mounts {
			if m.Type == "bind" && m.Source != "/run/coco/shm" {
				t.Fatalf("host bind mount kept: %+v", m)
			}
		}
		if _, err := res.Marshal(); err != nil {
			t.Fatal(err)
		}
	})
}

// A spec that leaves /proc/sys writable (crictl without masked paths, or a
// hostile host) would let root in the container set kernel.core_pattern:
// the guest makes it read-only unless the container has CAP_SYS_ADMIN.
func TestRewriteProtectsProc(t *testing.T) {
	var s specs.Spec
	json.Unmarshal(hostSpec(t), &s)
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/proc2", Type: "proc", Source: "proc"})
	s.Linux.ReadonlyPaths = []string{"/proc/sys"}
	s.Linux.MaskedPaths = []string{"/proc/bus"}
	b, _ := json.Marshal(&s)
	res, err := Rewrite(b, Options{ContainerID: "c1", PodNamespace: SandboxNamespaces(17)})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/fs",
		"/proc2/sys", "/proc2/sysrq-trigger", "/proc2/irq", "/proc2/bus", "/proc2/fs"}
	if got := res.Spec.Linux.ReadonlyPaths; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("readonlyPaths = %q, want %q", got, want)
	}
	if !strings.Contains(strings.Join(res.Warnings, "\n"), "linux.readonlyPaths: added /proc/sysrq-trigger") {
		t.Errorf("warnings = %q, want the added paths named", res.Warnings)
	}

	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{"CAP_SYS_ADMIN"}}
	s.Linux.ReadonlyPaths = nil
	b, _ = json.Marshal(&s)
	if res, err = Rewrite(b, Options{ContainerID: "c1", PodNamespace: SandboxNamespaces(17)}); err != nil {
		t.Fatal(err)
	}
	if len(res.Spec.Linux.ReadonlyPaths) != 0 {
		t.Fatalf("privileged container's readonlyPaths = %q, want what the host sent", res.Spec.Linux.ReadonlyPaths)
	}
}

// A RecursiveReadOnly mount (rro, which containerd sets once the shim
// advertises it) and a user namespace pod's id mappings reach crun.
func TestRewriteKeepsRecursiveReadOnlyAndIDMap(t *testing.T) {
	var s specs.Spec
	if err := json.Unmarshal(hostSpec(t), &s); err != nil {
		t.Fatal(err)
	}
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 65536}}
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/mnt", Type: "bind", Source: "/tmp/host-dir",
		Options: []string{"rbind", "rro", "rprivate", "bogus"}, UIDMappings: ids, GIDMappings: ids})
	b, _ := json.Marshal(&s)
	res, err := Rewrite(b, Options{ContainerID: "c1", VolumeRoot: "/run/coco/volumes", PodNamespace: SandboxNamespaces(9)})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.Spec.Mounts {
		if m.Destination == "/mnt" {
			if !contains(m.Options, "rro") || contains(m.Options, "bogus") || len(m.UIDMappings) != 1 || len(m.GIDMappings) != 1 {
				t.Fatalf("/mnt = %+v", m)
			}
			return
		}
	}
	t.Fatal("no /mnt mount")
}

// A pod with hostUsers: false: containerd names the pod's user namespace
// on the host; in the guest the sandbox container makes one from the
// spec's mappings and the app containers join the sandbox container's.
func TestRewritePodUserNamespace(t *testing.T) {
	var s specs.Spec
	if err := json.Unmarshal(hostSpec(t), &s); err != nil {
		t.Fatal(err)
	}
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 100000}}
	s.Linux.UIDMappings, s.Linux.GIDMappings = ids, ids
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/4242/ns/user"})
	b, _ := json.Marshal(&s)
	userNS := func(res *Result) *specs.LinuxNamespace {
		for i, ns := range res.Spec.Linux.Namespaces {
			if ns.Type == specs.UserNamespace {
				return &res.Spec.Linux.Namespaces[i]
			}
		}
		return nil
	}
	res, err := Rewrite(b, Options{ContainerID: "pod", Sandbox: true})
	if err != nil {
		t.Fatal(err)
	}
	if ns := userNS(res); ns == nil || ns.Path != "" || len(res.Spec.Linux.UIDMappings) != 1 {
		t.Fatalf("sandbox container: user ns %+v, mappings %v; want a new one made from the mappings", ns, res.Spec.Linux.UIDMappings)
	}
	res, err = Rewrite(b, Options{ContainerID: "c1", PodNamespace: SandboxNamespaces(9)})
	if err != nil {
		t.Fatal(err)
	}
	if ns := userNS(res); ns == nil || ns.Path != "/proc/9/ns/user" {
		t.Fatalf("app container: user ns %+v, want the sandbox container's", ns)
	}
	// A pod without a sandbox container (sandboxer = "shim") has none to join.
	_, err = Rewrite(b, Options{ContainerID: "c1", PodNamespace: VMNamespaces(func() (int, error) { return 7, nil })})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "namespaces[5].path") {
		t.Fatalf("without a sandbox container: err = %v, want InvalidArgument naming namespaces[5].path", err)
	}
}
