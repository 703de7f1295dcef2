// Package container prepares guest bundles: the rewritten config.json, the
// files the host sent for bind mounts, and the root filesystem (a
// hot-plugged read-only EROFS disk under a private overlay on tmpfs, or the
// agent's own pause rootfs for the sandbox container).
package container

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/guest-assets/agent/boot"
	"github.com/coco-runtime/coco/guest-assets/agent/cdh"
	"github.com/coco-runtime/coco/guest-assets/agent/spec"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Config holds the guest paths a Manager works with.
type Config struct {
	// BundleRoot holds one bundle directory per container.
	BundleRoot string
	// ShmDir is the pod's shared /dev/shm.
	ShmDir string
	// CgroupParent is the guest cgroup containers are created under.
	CgroupParent string
	// PauseBinary (coco-pause) is bind-mounted as /pause into the sandbox
	// container when runc runs it.
	PauseBinary string
	// SysBlock is where disks are looked up by serial (/sys/block).
	SysBlock string
	// DevDir holds the block device nodes (/dev).
	DevDir string
	// DeviceWait bounds the wait for a hot-plugged disk to appear.
	DeviceWait time.Duration
	// DriversReady is closed once the kernel modules for disks and
	// filesystems are loaded (the agent serves before that); nil = ready.
	DriversReady <-chan struct{}
	// PodPIDHolder returns the pid of the process whose pid namespace the
	// pod shares when no sandbox container holds it (see UseVMNamespaces),
	// starting it on the first call; nil refuses such pods.
	PodPIDHolder func(ctx context.Context, sandboxID string) (int, error)
	// VolumeRoot holds the pod's guest directories that stand in for host
	// directories, one per host path, shared by the pod's containers (see
	// spec.Options.VolumeRoot); "" gives each mount a private tmpfs.
	VolumeRoot string
	// PullImage pulls, verifies and unpacks an image in the guest and
	// returns the guest directory holding its root filesystem, shared
	// read-only by the pod's containers of that image; nil: no guest pull.
	PullImage func(ctx context.Context, image string) (string, error)
	// Unseal returns a sealed secret's plaintext (the pod's attestation
	// client); nil when the owner configured no Key Broker Service.
	// Containers whose env or files hold sealed secrets need it.
	Unseal cdh.UnsealFunc
}

type prepared struct {
	bundle  string
	sandbox bool
	mounts  []string // to unmount, innermost first
	// subPaths are the bind targets of subPath mounts of emptyDirs (in
	// mounts too), removed once unmounted.
	subPaths []string
	process  []byte // the process as the host sent it (spec.Result.HostProcess)
	// volumes maps a file volume's mount destination to its guest
	// directory (atomic writer layout); emptyFiles a single-file mount the
	// host sent empty (a termination message file) to its guest file.
	// Both are set once Prepare succeeds, under Manager.mu.
	volumes    map[string]string
	emptyFiles map[string]string
	volMu      sync.Mutex // serialises UpdateVolume
	// userNS is the sandbox container's user namespace (nil: none).
	userNS *spec.UserNamespace
}

// Manager tracks prepared bundles and the sandbox container. It is safe for
// concurrent use.
type Manager struct {
	cfg Config

	mu         sync.Mutex
	containers map[string]*prepared
	sandboxID  string
	sandboxPID int
	// vmPod names the pod whose shared namespaces are the VM's (no sandbox
	// container); "" when a sandbox container holds them.
	vmPod string
	// emptyDirs are the pod's emptyDir tmpfs mounts, made by the first
	// container that mounts each (emptydir.go).
	emptyDirs map[string]bool
	// emptyDirMu serialises making a disk-backed emptyDir (seconds: the
	// disk's wait and mkfs), without holding mu.
	emptyDirMu sync.Mutex
}

// NewManager returns a manager for cfg.
func NewManager(cfg Config) *Manager {
	if cfg.SysBlock == "" {
		cfg.SysBlock = "/sys/block"
	}
	if cfg.DevDir == "" {
		cfg.DevDir = "/dev"
	}
	if cfg.DeviceWait == 0 {
		cfg.DeviceWait = 10 * time.Second
	}
	return &Manager{cfg: cfg, containers: map[string]*prepared{}}
}

// BundlePath is where a container's bundle lives.
func (m *Manager) BundlePath(id string) string { return filepath.Join(m.cfg.BundleRoot, id) }

// Prepared reports whether id has a bundle ready for task Create.
func (m *Manager) Prepared(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.containers[id] != nil
}

// Process returns the process of prepared container id as the host sent
// it in PrepareContainer, which the policy allowed then (canonical JSON).
func (m *Manager) Process(id string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.containers[id]
	if p == nil || p.process == nil {
		return nil, false
	}
	return p.process, true
}

// IsSandbox reports whether id is the prepared sandbox container.
func (m *Manager) IsSandbox(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return id != "" && id == m.sandboxID
}

// Created records a created task; the sandbox container's pid is what other
// containers' namespaces join.
func (m *Manager) Created(id string, pid int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id == m.sandboxID {
		m.sandboxPID = pid
	}
}

// UseVMNamespaces makes the VM's own ipc and uts namespaces those of pod
// sandboxID, whose containers then need no sandbox container; the pod's
// pid namespace comes from Config.PodPIDHolder when a container joins it.
// A sandbox container, if one is prepared, still wins.
func (m *Manager) UseVMNamespaces(sandboxID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vmPod = sandboxID
}

// podNamespaces is where a container prepared now finds the pod's shared
// namespaces. Called with m.mu held.
func (m *Manager) podNamespaces(ctx context.Context) func(specs.LinuxNamespaceType) (string, error) {
	if m.sandboxID != "" || m.vmPod == "" {
		return spec.SandboxNamespaces(m.sandboxPID)
	}
	pod := m.vmPod
	return spec.VMNamespaces(func() (int, error) {
		if m.cfg.PodPIDHolder == nil {
			return 0, fmt.Errorf("this agent cannot hold a pod pid namespace without a sandbox container: %w", errdefs.ErrNotImplemented)
		}
		return m.cfg.PodPIDHolder(ctx, pod)
	})
}

// Prepare writes the bundle for r (already validated) and returns its path.
func (m *Manager) Prepare(ctx context.Context, r *api.PrepareContainerRequest) (_ string, retErr error) {
	id := r.GetContainerId()
	m.mu.Lock()
	if m.containers[id] != nil {
		m.mu.Unlock()
		return "", fmt.Errorf("container %s already prepared: %w", id, errdefs.ErrAlreadyExists)
	}
	if r.GetSandboxContainer() && m.sandboxID != "" {
		m.mu.Unlock()
		return "", fmt.Errorf("sandbox_container: the sandbox container is already %s: %w", m.sandboxID, errdefs.ErrAlreadyExists)
	}
	p := &prepared{bundle: m.BundlePath(id), sandbox: r.GetSandboxContainer()}
	// Reserve the id while the slow part runs without the lock.
	m.containers[id] = p
	if p.sandbox {
		m.sandboxID = id
	}
	podNS := m.podNamespaces(ctx)
	m.mu.Unlock()
	defer func() {
		if retErr != nil {
			m.cleanup(ctx, p)
			m.mu.Lock()
			delete(m.containers, id)
			if p.sandbox {
				m.sandboxID = ""
			}
			m.mu.Unlock()
		}
	}()

	if r.GetRootfs().GetGuestPull() != nil && m.cfg.PullImage == nil {
		return "", fmt.Errorf("rootfs.guest_pull: this guest cannot pull images: %w", errdefs.ErrNotImplemented)
	}
	// Searchable by all: the OCI runtime opens rootfs in it from inside a
	// user namespace, where the guest's root is no one. Its files are not.
	if err := os.Mkdir(p.bundle, 0o711); err != nil {
		if os.IsExist(err) {
			return "", fmt.Errorf("bundle %s exists: %w", p.bundle, errdefs.ErrAlreadyExists)
		}
		return "", err
	}
	filesRoot := filepath.Join(p.bundle, "files")
	files, err := writeFiles(filesRoot, r.GetFiles())
	if err != nil {
		return "", err
	}
	diskDirs, err := m.mountDiskVolumes(ctx, p, r.GetDiskVolumes())
	if err != nil {
		return "", err
	}
	blockDevs, err := m.blockVolumes(ctx, r.GetBlockVolumes())
	if err != nil {
		return "", err
	}
	res, err := spec.Rewrite(r.GetSpec(), spec.Options{
		ContainerID:  id,
		Sandbox:      p.sandbox,
		PodNamespace: podNS,
		Files:        files,
		FilesRoot:    filesRoot,
		ShmDir:       m.cfg.ShmDir,
		CgroupParent: m.cfg.CgroupParent,
		VolumeRoot:   m.cfg.VolumeRoot,
		DiskDirs:     diskDirs,
		BlockDevs:    blockDevs,
	})
	if err != nil {
		return "", err
	}
	userNS, err := rootfsUserNS(res.UserNS(), p.sandbox)
	if err != nil {
		return "", err
	}
	if p.sandbox {
		p.userNS = res.UserNS()
	}
	for _, d := range res.VolumeDirs {
		// An emptyDir is writable by any user of the pod, as the kubelet
		// makes it on a node.
		if err := os.MkdirAll(d, 0o777); err != nil {
			return "", err
		}
		if serial, ok := res.DiskEmptyDirs[d]; ok {
			if err := m.mountEmptyDirDisk(ctx, d, serial, res.EmptyDirs[d]); err != nil {
				return "", fmt.Errorf("container %s: %w", id, err)
			}
			continue
		}
		if size, ok := res.EmptyDirs[d]; ok {
			if err := m.mountEmptyDir(d, size); err != nil {
				return "", err
			}
			continue
		}
		if err := os.Chmod(d, 0o777); err != nil {
			return "", err
		}
	}
	for _, sp := range res.SubPaths {
		if err := bindSubPath(sp.Dir, sp.Rel, sp.Target); err != nil {
			return "", fmt.Errorf("container %s: %w", id, err)
		}
		m.mu.Lock()
		p.mounts = append([]string{sp.Target}, p.mounts...)
		p.subPaths = append(p.subPaths, sp.Target)
		m.mu.Unlock()
	}
	m.mu.Lock()
	p.process = res.HostProcess
	m.mu.Unlock()
	// The policy judged the sealed text the host sent; the container gets
	// the plaintext, which exists only in the guest.
	if res.Spec.Process != nil {
		if err := cdh.UnsealEnv(ctx, res.Spec.Process.Env, m.cfg.Unseal); err != nil {
			return "", fmt.Errorf("container %s: %w", id, err)
		}
	}
	if err := cdh.UnsealFiles(ctx, files, m.cfg.Unseal); err != nil {
		return "", fmt.Errorf("container %s: %w", id, err)
	}
	volumes, emptyFiles, err := fileVolumes(filesRoot, r.GetFiles(), res.FileDirs)
	if err != nil {
		return "", fmt.Errorf("container %s: %w", id, err)
	}
	for _, w := range res.Warnings {
		log.G(ctx).WithField("id", id).Warn(w)
	}
	data, err := res.Marshal()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(p.bundle, "config.json"), data, 0o600); err != nil {
		return "", err
	}
	m.mu.Lock()
	p.volumes, p.emptyFiles = volumes, emptyFiles
	m.mu.Unlock()
	rootfs := filepath.Join(p.bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return "", err
	}
	// The sandbox container's rootfs is only needed when runc runs it
	// (MountPauseRootfs); the agent's own pause task needs none.
	if blk := r.GetRootfs().GetBlock(); blk != nil {
		if err := m.mountBlock(ctx, p, blk.GetSerial(), rootfs, userNS); err != nil {
			return "", err
		}
	}
	if gp := r.GetRootfs().GetGuestPull(); gp != nil {
		if err := m.mountPulled(ctx, p, gp.GetImage(), rootfs, userNS); err != nil {
			return "", err
		}
	}
	return p.bundle, nil
}

// MountPauseRootfs gives the prepared sandbox container id the rootfs runc
// needs to run coco-pause as /pause.
func (m *Manager) MountPauseRootfs(id string) error {
	m.mu.Lock()
	p := m.containers[id]
	m.mu.Unlock()
	if p == nil || !p.sandbox {
		return fmt.Errorf("container %s is not the prepared sandbox container: %w", id, errdefs.ErrNotFound)
	}
	return m.mountPause(p, filepath.Join(p.bundle, "rootfs"))
}

// writeFiles writes the host's files under dir at their destinations
// (/etc/hosts at dir/etc/hosts), so that the files of a directory mount
// form that directory. dir is new and the agent's own, and destinations
// are clean absolute paths, so nothing under it is a link.
func writeFiles(dir string, files []*api.File) (map[string]string, error) {
	if len(files) == 0 {
		return nil, nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(files))
	for i, f := range files {
		dest := path.Clean(f.GetDestination())
		if !path.IsAbs(dest) || dest == "/" {
			return nil, fmt.Errorf("files[%d].destination %q: want an absolute file path: %w", i, f.GetDestination(), errdefs.ErrInvalidArgument)
		}
		p := filepath.Join(dir, dest)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("files[%d].destination %q lies under another file's destination: %w", i, dest, errdefs.ErrInvalidArgument)
		}
		mode := os.FileMode(f.GetMode() & 0o777)
		if mode == 0 {
			mode = 0o644
		}
		// O_EXCL: a destination that is another file's directory, or
		// given twice, is refused rather than merged.
		w, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return nil, fmt.Errorf("files[%d].destination %q clashes with another file's: %w", i, dest, errdefs.ErrInvalidArgument)
		}
		_, err = w.Write(f.GetContent())
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("files[%d]: %w", i, err)
		}
		// OpenFile's mode is filtered by the umask; the host asked for this one.
		if err := os.Chmod(p, mode); err != nil {
			return nil, fmt.Errorf("files[%d]: %w", i, err)
		}
		out[f.GetDestination()] = p
	}
	return out, nil
}

// FindDisk waits for the block device whose serial is serial and returns
// its device node. The serial shows in sysfs a moment before the disk has a
// size; both must be there.
func (m *Manager) FindDisk(ctx context.Context, serial string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.DeviceWait)
	defer cancel()
	for {
		if dev := m.lookupDisk(serial); dev != "" {
			return dev, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("rootfs.block.serial: no disk with serial %q appeared within %s (was it hot-plugged?): %w", serial, m.cfg.DeviceWait, errdefs.ErrNotFound)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (m *Manager) lookupDisk(serial string) string {
	return boot.DiskBySerial(m.cfg.SysBlock, m.cfg.DevDir, serial)
}

// mountRetry mounts, retrying while a just-plugged device is still
// settling (ENXIO, ENODEV, ENOENT) until the device wait is over.
func (m *Manager) mountRetry(ctx context.Context, source, target, fstype string, flags uintptr) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.DeviceWait)
	defer cancel()
	for {
		err := unix.Mount(source, target, fstype, flags, "")
		if err == nil || (err != unix.ENXIO && err != unix.ENODEV && err != unix.ENOENT) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// mountBlock mounts the EROFS disk read-only and a private overlay whose
// writable layer lives on the guest's tmpfs, so writes never reach the host.
// mountPulled gives a container the image the guest pulled: a private
// overlay whose lower layer is the pod's read-only copy of the image.
func (m *Manager) mountPulled(ctx context.Context, p *prepared, image, rootfs, userNS string) error {
	lower, err := m.cfg.PullImage(ctx, image)
	if err != nil {
		return fmt.Errorf("rootfs.guest_pull %s: %w", image, err)
	}
	return m.mountOverlay(p, lower, rootfs, userNS, true)
}

// mountOverlay mounts rootfs as a writable overlay on lower, its upper
// layer in the bundle; with userNS, a user namespace file, for that
// namespace, lower id-mapped if idmapLower (overlayfs cannot be id-mapped
// itself, its layers can).
func (m *Manager) mountOverlay(p *prepared, lower, rootfs, userNS string, idmapLower bool) error {
	ovl := filepath.Join(p.bundle, ".overlay")
	upper, work := filepath.Join(ovl, "upper"), filepath.Join(ovl, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if userNS != "" {
		var err error
		if lower, err = m.userNSLayers(p, lower, upper, userNS, idmapLower); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", lower, err)
	}
	p.mounts = append([]string{rootfs}, p.mounts...)
	return nil
}

func (m *Manager) mountBlock(ctx context.Context, p *prepared, serial, rootfs, userNS string) error {
	if m.cfg.DriversReady != nil {
		select {
		case <-m.cfg.DriversReady:
		case <-ctx.Done():
			return fmt.Errorf("rootfs: disk and filesystem drivers still loading: %w", ctx.Err())
		}
	}
	dev, err := m.FindDisk(ctx, serial)
	if err != nil {
		return err
	}
	lower := filepath.Join(p.bundle, ".overlay", "lower")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		return err
	}
	if err := m.mountRetry(ctx, dev, lower, "erofs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID); err != nil {
		return fmt.Errorf("mount erofs disk %s (serial %s): %w", dev, serial, err)
	}
	p.mounts = append([]string{lower}, p.mounts...)
	// The host made the disk from its id-mapped view of the snapshot
	// (containerd mounts it with the pod's uidmap): ids already mapped.
	if err := m.mountOverlay(p, lower, rootfs, userNS, false); err != nil {
		return fmt.Errorf("serial %s: %w", serial, err)
	}
	return nil
}

// mountPause builds the sandbox container's rootfs, used when runc runs it:
// a small tmpfs with coco-pause bound read-only at /pause.
func (m *Manager) mountPause(p *prepared, rootfs string) error {
	if err := unix.Mount("tmpfs", rootfs, "tmpfs", unix.MS_NODEV|unix.MS_NOSUID, "size=1m,mode=755"); err != nil {
		return fmt.Errorf("pause rootfs: %w", err)
	}
	p.mounts = append([]string{rootfs}, p.mounts...)
	for _, d := range []string{"proc", "dev", "sys", "etc"} {
		if err := os.Mkdir(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	if p.userNS != nil && p.userNS.Path == "" {
		if err := chownPauseRoot(rootfs, p.userNS); err != nil {
			return err
		}
	}
	target := filepath.Join(rootfs, strings.TrimPrefix(spec.PauseBinary, "/"))
	if err := os.WriteFile(target, nil, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(m.cfg.PauseBinary, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s as pause: %w", m.cfg.PauseBinary, err)
	}
	p.mounts = append([]string{target}, p.mounts...)
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("make pause read-only: %w", err)
	}
	return nil
}

// Remove unmounts and deletes a container's bundle. Unknown ids are
// ErrNotFound.
func (m *Manager) Remove(ctx context.Context, id string) error {
	m.mu.Lock()
	p := m.containers[id]
	delete(m.containers, id)
	if p != nil && p.sandbox {
		m.sandboxID, m.sandboxPID = "", 0
	}
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	return m.cleanup(ctx, p)
}

func (m *Manager) cleanup(ctx context.Context, p *prepared) error {
	var first error
	for _, mnt := range p.mounts {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			log.G(ctx).WithError(err).WithField("path", mnt).Warn("unmount")
			if first == nil {
				first = fmt.Errorf("unmount %s: %w", mnt, err)
			}
		}
	}
	p.mounts = nil
	// One at a time and not recursively: a target still mounted shows
	// the emptyDir, whose content is the pod's.
	for _, t := range p.subPaths {
		os.Remove(t)
		os.Remove(filepath.Dir(t))
	}
	p.subPaths = nil
	if err := os.RemoveAll(p.bundle); err != nil && first == nil {
		first = err
	}
	return first
}

// UnsealProcess returns an exec's process (OCI JSON, as the gate left it)
// with sealed env values unsealed, as the container's own process got them
// at Prepare: containerd builds an exec's env from the spec it holds, which
// has the sealed text.
func (m *Manager) UnsealProcess(ctx context.Context, raw []byte) ([]byte, error) {
	if !bytes.Contains(raw, []byte(cdh.SealedPrefix)) {
		return raw, nil
	}
	var p specs.Process
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("exec process: %w", err)
	}
	before := slices.Clone(p.Env)
	if err := cdh.UnsealEnv(ctx, p.Env, m.cfg.Unseal); err != nil {
		return nil, err
	}
	if slices.Equal(before, p.Env) {
		return raw, nil
	}
	return json.Marshal(&p)
}
