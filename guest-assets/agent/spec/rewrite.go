// Package spec rewrites a container's OCI runtime spec, as containerd wrote
// it for the host, into the spec the guest runs: host namespace paths become
// the sandbox container's namespaces, host bind mounts become guest files or
// guest tmpfs, the cgroup moves under the guest's own hierarchy, and the
// root filesystem is the bundle's rootfs directory. It is pure (no I/O) so
// it can be fuzzed.
package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/policy/strictjson"
)

// PauseBinary is the sandbox container's process inside the agent-provided
// rootfs.
const PauseBinary = "/pause"

// Options describe the guest context of one rewrite.
type Options struct {
	ContainerID string
	// Sandbox is true for the pod's sandbox (pause) container.
	Sandbox bool
	// PodNamespace says where a container that joins the pod's namespace
	// of type t (pid, ipc or uts) finds it: a guest path, or "" for the
	// VM's own namespace (ipc and uts only: the VM's pid namespace holds
	// the agent). See SandboxNamespaces and VMNamespaces. nil: the pod
	// shares none yet.
	PodNamespace func(t specs.LinuxNamespaceType) (string, error)
	// Files maps a bind mount destination to the guest file written for
	// it; a directory bind mount's files (a kubelet secret or configMap
	// volume) are under its destination, "<dest>/<name>".
	Files map[string]string
	// FilesRoot is the guest directory holding Files at their
	// destinations, so <FilesRoot><dest> is a directory mount's content.
	FilesRoot string
	// ShmDir is the pod's shared /dev/shm in the guest ("" = private tmpfs).
	ShmDir string
	// CgroupParent is the guest cgroup under which every container lives.
	CgroupParent string
	// VolumeRoot holds the pod's guest directories that stand in for host
	// directories ("" = a private tmpfs each). Mounts of one host path
	// share one directory, so containers of a pod share an emptyDir.
	VolumeRoot string
	// DiskDirs maps a bind mount destination to the guest directory where
	// a hot-plugged read-only disk for it is mounted (an image volume);
	// the mount binds it read-only whatever its options say.
	DiskDirs map[string]string
	// BlockDevs maps a linux.devices path to the hot-plugged guest disk
	// standing in for that host block device (a volumeDevices entry).
	BlockDevs map[string]GuestDevice
}

// Result is a rewritten spec plus what was changed that the user may care
// about.
type Result struct {
	Spec     *specs.Spec
	Warnings []string
	// HostProcess is the container's process as the host sent it and the
	// policy judged it (canonical JSON): an exec's process is compared
	// with it, since containerd builds one by copying it.
	HostProcess []byte
	// VolumeDirs are the directories under VolumeRoot the spec now binds;
	// the caller creates them.
	VolumeDirs []string
	// EmptyDirs are the VolumeDirs that stand in for a kubelet emptyDir,
	// with the tmpfs size for each (0: the kernel's default, half the
	// guest's memory).
	EmptyDirs map[string]int64
	// DiskEmptyDirs are the EmptyDirs on a disk instead of tmpfs, with
	// the serial of the disk the host hot-plugs for each.
	DiskEmptyDirs map[string]string
	// SubPaths are the spec's subPath mounts of an emptyDir: the caller
	// binds each Rel of Dir (an EmptyDirs entry) at Target, which the
	// spec now binds, after checking that Rel stays inside Dir.
	SubPaths []SubPath
	// FileDirs are the destinations of directory mounts whose content is
	// the host's files (kubelet file volumes), in spec order.
	FileDirs []string
}

// SubPath is one subPath mount of an emptyDir (see Result.SubPaths).
type SubPath struct {
	Dir, Rel, Target string
}

// mount types that carry no host path and keep their meaning in the guest.
var guestMountTypes = []string{"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}

// bindOptions are the mount options kept on a rewritten bind mount; the
// shim advertises the same to containerd (shim/manager/features.go). The
// recursive ones (rro: RecursiveReadOnly) and idmap (a user namespace
// pod's volumes) are crun's, done in the guest kernel.
var bindOptions = []string{"ro", "rw", "rro", "rrw", "nosuid", "nodev", "noexec", "private", "rprivate", "slave", "rslave", "shared", "rshared", "idmap", "ridmap"}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("spec.%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// Rewrite parses raw (config.json bytes) and returns the guest spec.
func Rewrite(raw []byte, o Options) (*Result, error) {
	if err := api.ValidateID("container_id", o.ContainerID); err != nil {
		return nil, err
	}
	if len(raw) == 0 || len(raw) > api.MaxSpecBytes {
		return nil, fmt.Errorf("spec: %d bytes, want 1 to %d: %w", len(raw), api.MaxSpecBytes, errdefs.ErrInvalidArgument)
	}
	// The gate canonicalised the spec before the policy saw it; decoding
	// strictly again keeps one reading even for a caller that did not.
	var s specs.Spec
	if err := strictjson.Decode("spec", raw, &s); err != nil {
		return nil, err
	}
	res := &Result{Spec: &s}
	warn := func(format string, args ...any) { res.Warnings = append(res.Warnings, fmt.Sprintf(format, args...)) }

	if s.Process == nil {
		return nil, invalid("process", "missing")
	}
	var err error
	if res.HostProcess, err = json.Marshal(s.Process); err != nil {
		return nil, invalid("process", "%v", err)
	}
	if len(s.Process.Args) == 0 && !o.Sandbox {
		return nil, invalid("process.args", "empty")
	}
	if o.Sandbox {
		s.Process.Args = []string{PauseBinary}
		s.Process.Cwd = "/"
	}
	if s.Process.Cwd == "" || !path.IsAbs(s.Process.Cwd) {
		return nil, invalid("process.cwd", "%q must be absolute", s.Process.Cwd)
	}
	// Security modules of the host name profiles the guest kernel has not
	// loaded; the OCI runtime would fail to apply them.
	if s.Process.ApparmorProfile != "" {
		warn("process.apparmorProfile %q dropped: the guest loads no AppArmor profiles", s.Process.ApparmorProfile)
		s.Process.ApparmorProfile = ""
	}
	if s.Process.SelinuxLabel != "" {
		warn("process.selinuxLabel dropped: the guest has no SELinux policy")
		s.Process.SelinuxLabel = ""
	}
	readonly := s.Root != nil && s.Root.Readonly
	s.Root = &specs.Root{Path: "rootfs", Readonly: readonly}
	if s.Hooks != nil {
		warn("hooks dropped: host hook binaries do not exist in the guest")
		s.Hooks = nil
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if err := validateSpecIDMappings(&s); err != nil {
		return nil, err
	}
	if err := rewriteNamespaces(&s, o, warn); err != nil {
		return nil, err
	}
	if err = rewriteMounts(&s, o, res, warn); err != nil {
		return nil, err
	}
	blockDevs, err := blockDevices(&s, o.BlockDevs)
	if err != nil {
		return nil, err
	}
	rewriteLinux(&s, o, warn)
	s.Linux.Devices = append(s.Linux.Devices, blockDevs...)
	filterDeviceRules(&s, o.BlockDevs, warn)
	protectProc(&s, warn)
	return res, nil
}

// procReadonly are the /proc entries through which root writes global
// kernel state. containerd's default spec and the kubelet make them
// read-only for every unprivileged container; a spec without them (crictl,
// or a hostile host) would let root in the container write
// kernel.core_pattern and run a program as the guest's root.
var procReadonly = []string{"sys", "sysrq-trigger", "irq", "bus", "fs"}

// protectProc makes procReadonly read-only under every proc mount of a
// container whose bounding set lacks CAP_SYS_ADMIN (one that has it could
// remount them anyway).
func protectProc(s *specs.Spec, warn func(string, ...any)) {
	if s.Process.Capabilities != nil && slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
		return
	}
	var added []string
	for _, m := range s.Mounts {
		if m.Type != "proc" {
			continue
		}
		for _, p := range procReadonly {
			full := path.Join(m.Destination, p)
			if !slices.Contains(s.Linux.ReadonlyPaths, full) && !slices.Contains(s.Linux.MaskedPaths, full) {
				s.Linux.ReadonlyPaths = append(s.Linux.ReadonlyPaths, full)
				added = append(added, full)
			}
		}
	}
	if len(added) > 0 {
		warn("linux.readonlyPaths: added %s: a container without CAP_SYS_ADMIN may not write global kernel settings", strings.Join(added, ", "))
	}
}

// SandboxNamespaces is a PodNamespace for pods whose sandbox container, of
// guest pid pid (0: not running yet), holds the shared namespaces.
func SandboxNamespaces(pid int) func(specs.LinuxNamespaceType) (string, error) {
	return func(t specs.LinuxNamespaceType) (string, error) {
		if pid <= 0 {
			return "", fmt.Errorf("spec.linux.namespaces: %s namespace of the sandbox container requested, but the sandbox container is not running: %w", t, errdefs.ErrFailedPrecondition)
		}
		return fmt.Sprintf("/proc/%d/ns/%s", pid, nsFile(t)), nil
	}
}

// VMNamespaces is a PodNamespace for pods without a sandbox container: the
// VM is the pod, so its own ipc and uts namespaces are the pod's, and
// pidHolder returns the pid of the process whose pid namespace the pod
// shares (started on first use).
func VMNamespaces(pidHolder func() (int, error)) func(specs.LinuxNamespaceType) (string, error) {
	return func(t specs.LinuxNamespaceType) (string, error) {
		if t != specs.PIDNamespace {
			return "", nil
		}
		pid, err := pidHolder()
		if err != nil {
			return "", fmt.Errorf("spec.linux.namespaces: the pod's pid namespace: %w", err)
		}
		return SandboxNamespaces(pid)(t)
	}
}

func rewriteNamespaces(s *specs.Spec, o Options, warn func(string, ...any)) error {
	join := func(t specs.LinuxNamespaceType) (string, error) {
		if o.PodNamespace == nil {
			return SandboxNamespaces(0)(t)
		}
		p, err := o.PodNamespace(t)
		if err == nil && p == "" && t == specs.PIDNamespace {
			// Fail closed: the VM's pid namespace would show the agent.
			err = fmt.Errorf("spec.linux.namespaces: the pod's pid namespace cannot be the VM's: %w", errdefs.ErrFailedPrecondition)
		}
		return p, err
	}
	var out []specs.LinuxNamespace
	seen := map[specs.LinuxNamespaceType]bool{}
	for i, ns := range s.Linux.Namespaces {
		field := fmt.Sprintf("linux.namespaces[%d]", i)
		if seen[ns.Type] {
			return invalid(field+".type", "%q listed twice", ns.Type)
		}
		seen[ns.Type] = true
		switch ns.Type {
		case specs.NetworkNamespace:
			// The VM is the pod's network namespace: every container uses
			// the guest's, where the agent configures the pod's interfaces.
			continue
		case specs.UserNamespace:
			// A path names the pod's user namespace, which containerd
			// makes on the host for a pod with hostUsers: false. In the
			// guest the sandbox container makes it from the spec's id
			// mappings, and the pod's other containers join that one.
			if ns.Path == "" {
				break
			}
			if o.Sandbox {
				if len(s.Linux.UIDMappings) == 0 || len(s.Linux.GIDMappings) == 0 {
					return invalid(field+".path", "the pod's user namespace comes without linux.uidMappings and gidMappings to make it in the guest")
				}
				ns.Path = ""
				break
			}
			p, err := join(ns.Type)
			if err != nil {
				return err
			}
			if p == "" {
				return invalid(field+".path", "the pod's sandbox container has no user namespace of its own to join")
			}
			ns.Path = p
		case specs.MountNamespace, specs.CgroupNamespace, specs.TimeNamespace:
			ns.Path = ""
		case specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace:
			// A path names the pod's shared namespace on the host; in the
			// guest PodNamespace says which that is. No path: a new one.
			if o.Sandbox || ns.Path == "" {
				ns.Path = ""
				break
			}
			p, err := join(ns.Type)
			if err != nil {
				return err
			}
			if p == "" {
				continue // the VM's own, which the container is in without an entry
			}
			ns.Path = p
		default:
			return invalid(field+".type", "unknown namespace type %q", ns.Type)
		}
		out = append(out, ns)
	}
	if !seen[specs.MountNamespace] {
		out = append(out, specs.LinuxNamespace{Type: specs.MountNamespace})
	}
	if !seen[specs.PIDNamespace] {
		// The host's pid namespace means nothing here, and the guest's own
		// would show the agent to the container.
		warn("no pid namespace requested (host PID): the container gets its own")
		out = append(out, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	s.Linux.Namespaces = out
	return nil
}

func nsFile(t specs.LinuxNamespaceType) string {
	switch t {
	case specs.NetworkNamespace:
		return "net"
	case specs.MountNamespace:
		return "mnt"
	}
	return string(t)
}

func rewriteMounts(s *specs.Spec, o Options, res *Result, warn func(string, ...any)) error {
	used := map[string]bool{}
	var dirs, fileDirs []string
	for i := range s.Mounts {
		m := &s.Mounts[i]
		field := fmt.Sprintf("mounts[%d]", i)
		if m.Destination == "" || !path.IsAbs(m.Destination) || strings.ContainsRune(m.Destination, 0) {
			return invalid(field+".destination", "%q must be an absolute path", m.Destination)
		}
		m.Destination = path.Clean(m.Destination)
		bind := m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
		if !bind {
			if !slices.Contains(guestMountTypes, m.Type) {
				return invalid(field+".type", "%q is not allowed in the guest: want bind or one of %s", m.Type, strings.Join(guestMountTypes, ", "))
			}
			continue
		}
		ro := slices.Contains(m.Options, "ro")
		if src, ok := o.DiskDirs[m.Destination]; ok {
			if used[m.Destination] {
				return invalid(field+".destination", "%q: a disk volume's destination mounted twice", m.Destination)
			}
			used[m.Destination] = true
			*m = readOnlyBind(guestBind(*m, src))
			continue
		}
		if src, ok := o.Files[m.Destination]; ok {
			used[m.Destination] = true
			*m = guestBind(*m, src)
			continue
		}
		if dir, ok := filesUnder(o, m.Destination, used); ok {
			if slices.ContainsFunc(fileDirs, func(d string) bool {
				return strings.HasPrefix(m.Destination, d+"/") || strings.HasPrefix(d, m.Destination+"/")
			}) {
				// Each keeps its own atomic writer layout: one inside
				// another's would be moved into its version directory.
				return invalid(field+".destination", "%q: a file volume nested in another is not supported", m.Destination)
			}
			if !slices.Contains(fileDirs, m.Destination) {
				fileDirs = append(fileDirs, m.Destination)
			}
			*m = guestBind(*m, dir)
			continue
		}
		if m.Destination == "/dev/shm" && o.ShmDir != "" {
			*m = specs.Mount{Destination: m.Destination, Type: "bind", Source: o.ShmDir, Options: []string{"rbind", "nosuid", "nodev", "noexec"}}
			continue
		}
		// Host directories cannot reach the guest (no shared filesystem):
		// the pod's containers share an empty guest directory per host
		// path (an emptyDir works), or each gets an empty private tmpfs.
		if o.VolumeRoot != "" && m.Destination != "/dev/shm" {
			dir := path.Join(o.VolumeRoot, VolumeKey(m.Source))
			host, name, sub, ok, err := EmptyDirSource(m.Source)
			if err != nil {
				return invalid(field+".source", "%v", err)
			}
			if ok {
				size, disk, err := EmptyDirSize(s.Annotations, name)
				if err != nil {
					return err
				}
				dir = path.Join(o.VolumeRoot, VolumeKey(host))
				if res.EmptyDirs == nil {
					res.EmptyDirs = map[string]int64{}
				}
				res.EmptyDirs[dir] = size
				if disk {
					if res.DiskEmptyDirs == nil {
						res.DiskEmptyDirs = map[string]string{}
					}
					res.DiskEmptyDirs[dir] = EmptyDirSerial(host)
				}
				if !slices.Contains(dirs, dir) {
					dirs = append(dirs, dir)
				}
				if sub == "" {
					*m = guestBind(*m, dir)
					continue
				}
				// The agent binds the checked path here (a name no
				// VolumeKey takes): the OCI runtime's own bind of
				// <dir>/<sub> would follow links a container made.
				target := path.Join(o.VolumeRoot, "subpaths", o.ContainerID, fmt.Sprint(i))
				res.SubPaths = append(res.SubPaths, SubPath{Dir: dir, Rel: sub, Target: target})
				*m = guestBind(*m, target)
				continue
			}
			warn("mount %s: host path %q is not shared with the guest; using the pod's empty guest directory for it", m.Destination, m.Source)
			*m = guestBind(*m, dir)
			if !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
			continue
		}
		warn("mount %s: host path %q is not shared with the guest; using an empty tmpfs", m.Destination, m.Source)
		opts := []string{"nosuid", "nodev", "mode=755"}
		if m.Destination == "/dev/shm" {
			opts = []string{"nosuid", "nodev", "noexec", "mode=1777", "size=65536k"}
		}
		if ro {
			opts = append(opts, "ro")
		}
		*m = specs.Mount{Destination: m.Destination, Type: "tmpfs", Source: "tmpfs", Options: opts}
	}
	var unused []string
	for d := range o.Files {
		if !used[d] {
			unused = append(unused, d)
		}
	}
	if len(unused) > 0 {
		sort.Strings(unused)
		return fmt.Errorf("files: destination %q has no bind mount in the spec: %w", unused[0], errdefs.ErrInvalidArgument)
	}
	if err := disksUsed(o.DiskDirs, used); err != nil {
		return err
	}
	res.VolumeDirs, res.FileDirs = dirs, fileDirs
	return nil
}

// filesUnder returns the guest directory holding the files the host sent
// for a directory bind mount at dest, and marks them used.
func filesUnder(o Options, dest string, used map[string]bool) (string, bool) {
	if o.FilesRoot == "" || dest == "/" {
		return "", false
	}
	found := false
	for d := range o.Files {
		if strings.HasPrefix(d, dest+"/") {
			used[d] = true
			found = true
		}
	}
	return path.Join(o.FilesRoot, dest), found
}

// VolumeKey names the guest directory standing in for a host path: a
// digest, so no host path becomes a guest path.
func VolumeKey(hostPath string) string {
	sum := sha256.Sum256([]byte(path.Clean(hostPath)))
	return hex.EncodeToString(sum[:16])
}

// guestBind is m as a bind mount of the guest directory src, keeping its
// bindOptions and id mappings.
func guestBind(m specs.Mount, src string) specs.Mount {
	return specs.Mount{Destination: m.Destination, Type: "bind", Source: src, Options: keepBindOptions(m.Options),
		UIDMappings: m.UIDMappings, GIDMappings: m.GIDMappings}
}

func keepBindOptions(in []string) []string {
	out := []string{"rbind"}
	for _, o := range in {
		if slices.Contains(bindOptions, o) && !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out
}

func rewriteLinux(s *specs.Spec, o Options, warn func(string, ...any)) {
	l := s.Linux
	parent := o.CgroupParent
	if parent == "" {
		parent = "/coco"
	}
	l.CgroupsPath = path.Join(parent, o.ContainerID)
	if len(l.Devices) > 0 {
		warn("linux.devices dropped: %d host device(s) do not exist in the guest", len(l.Devices))
		l.Devices = nil
	}
	if l.MountLabel != "" {
		l.MountLabel = ""
	}
	if l.Seccomp != nil && l.Seccomp.ListenerPath != "" {
		warn("linux.seccomp.listenerPath %q dropped: host sockets are not reachable", l.Seccomp.ListenerPath)
		l.Seccomp.ListenerPath = ""
		l.Seccomp.ListenerMetadata = ""
	}
	// Containers share the VM's network namespace, where the OCI runtime refuses
	// network sysctls; pod-wide ones belong in SetupSandbox.sysctls.
	for k := range l.Sysctl {
		if strings.HasPrefix(k, "net.") {
			warn("linux.sysctl %s dropped: containers share the VM's network namespace; pass it in SetupSandbox", k)
			delete(l.Sysctl, k)
		}
	}
}

// Marshal encodes the rewritten spec as config.json.
func (r *Result) Marshal() ([]byte, error) {
	return json.MarshalIndent(r.Spec, "", "\t")
}
