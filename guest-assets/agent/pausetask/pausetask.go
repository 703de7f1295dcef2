//go:build linux

// Package pausetask runs the pod's sandbox (pause) container without runc.
//
// The sandbox container only holds the pod's pid, ipc and uts namespaces.
// Through runc it costs two starts of a 12 MB Go binary plus runc's
// container setup: most of a second of a pod start under TCG, before any
// workload runs. Here the agent sets the namespaces up on a locked OS thread
// (hostname, namespaced sysctls), forks a small pause binary into them and
// answers containerd's task API for that one container itself.
//
// Specs this package cannot honour exactly (a user namespace, a namespace
// path to join, sysctls outside the ipc and uts namespaces) are left to
// runc: Supported says which.
package pausetask

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	cevents "github.com/containerd/containerd/v2/core/events"
	cruntime "github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coco-runtime/coco/guest-assets/agent/pause"
)

// Reaper starts a command and reports its exit; containerd's
// reaper.Default (fed by the agent's SIGCHLD loop) is the real one.
type Reaper interface {
	Start(*exec.Cmd) (chan runc.Exit, error)
	Wait(*exec.Cmd, chan runc.Exit) (int, error)
}

// Config is what a Service needs from the guest.
type Config struct {
	// Binary is the pause program (coco-pause in the initrd).
	Binary string
	// CgroupRoot is the cgroup2 mount; the pause process starts in
	// <CgroupRoot>/<spec.linux.cgroupsPath>.
	CgroupRoot string
	Publisher  shim.Publisher
	Reaper     Reaper
}

// Service is the task API for the one sandbox container. Calls for any other
// id are ErrNotFound. It is safe for concurrent use.
type Service struct {
	cfg Config

	mu sync.Mutex
	t  *pauseTask
}

type pauseTask struct {
	id, bundle, cgroup string
	proc               *os.Process
	started            bool
	exited             chan struct{} // closed once status and exitedAt are set
	// createDone is closed when Create has published TaskCreate or failed
	// (createFailed): the exit event must follow the create event, and a
	// task that never existed for the host has no exit.
	createDone   chan struct{}
	createFailed bool
	// exitSent is closed once the exit event is out (or will never be):
	// Delete waits for it, so the host sees TaskExit before TaskDelete.
	exitSent chan struct{}
	status   uint32
	exitedAt time.Time
}

// New returns a Service.
func New(cfg Config) *Service { return &Service{cfg: cfg} }

// namespaced sysctls that the pause process's own ipc and uts namespaces
// hold; runc accepts the same set for a container without a network
// namespace of its own.
var namespacedSysctls = []string{"kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.", "kernel.hostname", "kernel.domainname"}

// Supported reports whether s can run here; the error says why not (runc
// then runs the sandbox container instead).
func Supported(s *specs.Spec) error {
	if s.Linux == nil {
		return fmt.Errorf("no linux section")
	}
	for _, ns := range s.Linux.Namespaces {
		switch ns.Type {
		case specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.CgroupNamespace:
			if ns.Path != "" {
				return fmt.Errorf("joins the %s namespace %s", ns.Type, ns.Path)
			}
		default:
			return fmt.Errorf("%s namespace requested", ns.Type)
		}
	}
	for k := range s.Linux.Sysctl {
		if !hasAnyPrefix(k, namespacedSysctls) {
			return fmt.Errorf("sysctl %s is not in the ipc or uts namespace", k)
		}
	}
	return nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// Has reports whether id is the sandbox container this Service runs.
func (s *Service) Has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t != nil && s.t.id == id
}

func (s *Service) get(id string) (*pauseTask, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t == nil || s.t.id != id {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "container %s: not the sandbox container", id)
	}
	return s.t, nil
}

// LoadSpec reads a bundle's config.json.
func LoadSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s/config.json: %w", bundle, err)
	}
	return &s, nil
}

// Create forks the pause process into the namespaces the bundle's spec asks
// for; the spec must pass Supported.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	spec, err := LoadSpec(r.Bundle)
	if err != nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "sandbox container %s: %v", r.ID, err)
	}
	return s.CreateFromSpec(ctx, r, spec)
}

// CreateFromSpec is Create with the bundle's spec already read.
func (s *Service) CreateFromSpec(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (*taskAPI.CreateTaskResponse, error) {
	if err := Supported(spec); err != nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "sandbox container %s: %v", r.ID, err)
	}
	s.mu.Lock()
	if s.t != nil {
		s.mu.Unlock()
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "sandbox container %s already exists", s.t.id)
	}
	t := &pauseTask{id: r.ID, bundle: r.Bundle, exited: make(chan struct{}), createDone: make(chan struct{}), exitSent: make(chan struct{})}
	s.t = t // reserved while the fork runs
	s.mu.Unlock()

	var err error
	t.cgroup, err = s.makeCgroup(spec.Linux.CgroupsPath)
	if err == nil {
		err = s.fork(t, spec)
	}
	if err != nil {
		t.createFailed = true
		close(t.createDone)
		if t.cgroup != "" {
			os.Remove(t.cgroup)
		}
		s.mu.Lock()
		s.t = nil
		s.mu.Unlock()
		return nil, errgrpc.ToGRPCf(errdefs.ErrInternal, "sandbox container %s: %v", r.ID, err)
	}
	s.publish(ctx, &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		IO:          &eventstypes.TaskIO{},
		Pid:         uint32(t.proc.Pid),
	})
	close(t.createDone)
	return &taskAPI.CreateTaskResponse{Pid: uint32(t.proc.Pid)}, nil
}

// makeCgroup creates the container's cgroup directory; "" when the spec
// names none.
func (s *Service) makeCgroup(path string) (string, error) {
	if path == "" || s.cfg.CgroupRoot == "" {
		return "", nil
	}
	dir := filepath.Join(s.cfg.CgroupRoot, filepath.Clean("/"+path))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cgroup: %w", err)
	}
	return dir, nil
}

// fork starts the pause binary. Hostname and sysctls must be set inside the
// new uts and ipc namespaces before the child exists, so a locked thread
// unshares them, configures them and forks; the child inherits the thread's
// namespaces. The thread is then tainted and exits with the goroutine.
func (s *Service) fork(t *pauseTask, spec *specs.Spec) error {
	var cgroupFD *os.File
	if t.cgroup != "" {
		f, err := os.Open(t.cgroup)
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		defer f.Close()
		cgroupFD = f
	}
	unshare, clone := namespaceFlags(spec)
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devNull.Close()
	// pause says on this pipe when its signal handlers are in place; until
	// then a SIGTERM would end it with the Go runtime's exit code or, as
	// PID 1 of its namespace, not at all.
	ready, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer ready.Close()
	defer readyW.Close()
	cmd := exec.Command(s.cfg.Binary)
	cmd.Args[0] = "pause"
	cmd.Dir = "/"
	cmd.Env = []string{pause.ReadyFDEnv + "=3"}
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, devNull
	// No Pdeathsig: it fires when the forking thread exits, which this
	// locked thread does right after the fork.
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: clone, Setsid: true}
	if cgroupFD != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cgroupFD.Fd())
	}

	type started struct {
		exits chan runc.Exit
		err   error
	}
	done := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := configureNamespaces(unshare, spec); err != nil {
			done <- started{err: err}
			return
		}
		ec, err := s.cfg.Reaper.Start(cmd)
		done <- started{ec, err}
	}()
	res := <-done
	if res.err != nil {
		return res.err
	}
	readyW.Close()
	t.proc = cmd.Process
	go s.watch(t, cmd, res.exits)
	ready.SetReadDeadline(time.Now().Add(readyTimeout))
	if n, _ := ready.Read(make([]byte, 1)); n != 1 {
		cmd.Process.Kill()
		<-t.exited
		return fmt.Errorf("%s exited or hung before it was ready (exit status %d)", s.cfg.Binary, t.status)
	}
	return nil
}

// watch records the pause process's exit and publishes it after the
// create event.
func (s *Service) watch(t *pauseTask, cmd *exec.Cmd, exits chan runc.Exit) {
	status, _ := s.cfg.Reaper.Wait(cmd, exits)
	s.mu.Lock()
	t.status, t.exitedAt = uint32(status), time.Now()
	s.mu.Unlock()
	close(t.exited)
	<-t.createDone
	defer close(t.exitSent)
	if t.createFailed {
		return
	}
	s.publish(context.Background(), &eventstypes.TaskExit{
		ContainerID: t.id,
		ID:          t.id,
		Pid:         uint32(cmd.Process.Pid),
		ExitStatus:  t.status,
		ExitedAt:    timestamppb.New(t.exitedAt),
	})
}

// readyTimeout bounds pause's start; it takes milliseconds, even under TCG.
const readyTimeout = 10 * time.Second

// namespaceFlags splits the spec's new namespaces into those the forking
// thread unshares (to configure them before the child exists) and those
// only the child gets.
func namespaceFlags(spec *specs.Spec) (unshare, clone uintptr) {
	for _, ns := range spec.Linux.Namespaces {
		switch ns.Type {
		case specs.IPCNamespace:
			unshare |= unix.CLONE_NEWIPC
		case specs.UTSNamespace:
			unshare |= unix.CLONE_NEWUTS
		case specs.PIDNamespace:
			clone |= unix.CLONE_NEWPID
		case specs.MountNamespace:
			clone |= unix.CLONE_NEWNS
		case specs.CgroupNamespace:
			clone |= unix.CLONE_NEWCGROUP
		}
	}
	return unshare, clone
}

// configureNamespaces unshares the calling (locked) thread's ipc and uts
// namespaces and applies the spec's hostname and sysctls in them.
func configureNamespaces(flags uintptr, spec *specs.Spec) error {
	if flags != 0 {
		if err := unix.Unshare(int(flags)); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
	}
	if spec.Hostname != "" {
		if flags&unix.CLONE_NEWUTS == 0 {
			return fmt.Errorf("hostname %q needs a uts namespace", spec.Hostname)
		}
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("hostname: %w", err)
		}
	}
	for k, v := range spec.Linux.Sysctl {
		// /proc/sys resolves ipc and uts values in the writer's namespaces:
		// this thread's.
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	return nil
}

func (s *Service) publish(ctx context.Context, e cevents.Event) {
	if s.cfg.Publisher == nil {
		return
	}
	// The queue never drops; an error means the agent is shutting down.
	_ = s.cfg.Publisher.Publish(ctx, cruntime.GetTopic(e), e)
}
