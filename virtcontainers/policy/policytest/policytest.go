// Package policytest builds the requests the policy tests feed the engine,
// in the canonical form the guest gives them before asking the policy.
package policytest

import (
	"encoding/json"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// ExecRequest is an ExecProcess of args in container c1, its process spec
// as containerd sends it (JSON in an Any).
func ExecRequest(t testing.TB, args ...string) *taskAPI.ExecProcessRequest {
	t.Helper()
	return Exec(t, specs.Process{Args: args, Cwd: "/"})
}

// Exec is an ExecProcess of p in container c1.
func Exec(t testing.TB, p specs.Process) *taskAPI.ExecProcessRequest {
	t.Helper()
	b, err := json.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	return &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: &anypb.Any{
		TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b,
	}}
}

// Prepare is a PrepareContainer of s as container c1.
func Prepare(t testing.TB, s *specs.Spec) *api.PrepareContainerRequest {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return &api.PrepareContainerRequest{ContainerId: "c1", Spec: b,
		Rootfs: &api.Rootfs{Source: &api.Rootfs_Block{Block: &api.BlockDevice{Serial: "r1", Fstype: "erofs"}}}}
}

// DefaultCaps are the capabilities of containerd's default spec.
func DefaultCaps() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
		"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
		"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
}

// CRIProcess is the process containerd's CRI gives an unprivileged
// container that runs args as uid 1000.
func CRIProcess(args ...string) *specs.Process {
	return &specs.Process{
		User: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000}},
		Args: args,
		Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=web-0"},
		Cwd:  "/",
		Capabilities: &specs.LinuxCapabilities{
			Bounding: DefaultCaps(), Effective: DefaultCaps(), Permitted: DefaultCaps(),
		},
		NoNewPrivileges: true,
		OOMScoreAdj:     intPtr(1000),
	}
}

// CRISpec is the OCI spec containerd 2.x's CRI writes for an unprivileged
// container of a pod without shareProcessNamespace (pkg/oci's default spec
// with the CRI's options): a deny-all device cgroup, read-only sysfs and
// cgroupfs, the pod's ipc, uts and network namespaces by host path.
func CRISpec(args ...string) *specs.Spec {
	limit := int64(64 << 20)
	return &specs.Spec{
		Version:  specs.Version,
		Process:  CRIProcess(args...),
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "web-0",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/containerd/sandboxes/p/hosts", Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/sandboxes/p/shm", Options: []string{"rbind", "rprivate", "rw"}},
		},
		Annotations: map[string]string{"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "p"},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  &specs.LinuxMemory{Limit: &limit},
			},
			CgroupsPath: "kubepods-besteffort-pod1.slice:cri-containerd:c1",
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace, Path: "/proc/4242/ns/ipc"},
				{Type: specs.UTSNamespace, Path: "/proc/4242/ns/uts"},
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: "/proc/4242/ns/net"},
				{Type: specs.CgroupNamespace},
			},
			MaskedPaths:   []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

func intPtr(i int) *int { return &i }
