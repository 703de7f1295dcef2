// Package manager is the shim's process lifecycle as containerd drives it
// (containerd's shim.Shim): `start` launches or re-uses the pod's shim
// process, `delete` cleans up after one that died.
package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/sandbox"
	"github.com/coco-runtime/coco/shim/options"
	"github.com/coco-runtime/coco/shim/pod"
	"github.com/coco-runtime/coco/shim/version"
)

// Config holds what the binary and the tests choose differently.
type Config struct {
	// Cleanup kills a dead shim's VM and removes its state directory
	// (sandbox.Cleanup in the binary).
	Cleanup func(ctx context.Context, stateDir string) error
	// Getenv reads the environment (os.Getenv in the binary).
	Getenv func(string) string
}

// AddressEnv hands the long-running shim its own socket address, so that it
// can remove the socket when it exits.
const AddressEnv = "COCO_SHIM_ADDRESS"

type manager struct {
	name string
	cfg  Config
}

// New returns the shim manager for runtime name.
func New(name string, cfg Config) shim.Shim {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	return &manager{name: name, cfg: cfg}
}

func (m *manager) Name() string { return m.name }

// Start runs in the bundle of the task containerd is creating. All tasks of
// a pod share one shim process (and one VM): they find it through a socket
// address derived from the pod's sandbox id.
func (m *manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	began := time.Now()
	params, legacyOpts := m.fixLegacy(params, os.Args[1:])
	id, ns := params.GetInstanceID(), params.GetNamespace()
	if err := identifiers.Validate(id); err != nil {
		return nil, fmt.Errorf("shim id: %w", err)
	}
	if ns == "" {
		ns, _ = namespaces.Namespace(ctx)
	}
	if ns == "" {
		return nil, fmt.Errorf("no containerd namespace given: %w", errdefs.ErrInvalidArgument)
	}
	ctx = namespaces.WithNamespace(ctx, ns)
	bundle, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	spec, err := options.ReadSpec(bundle)
	if err != nil {
		return nil, err
	}
	var annotations map[string]string
	if spec != nil {
		annotations = spec.Annotations
	}
	group, err := options.GroupID(id, annotations)
	if err != nil {
		return nil, err
	}

	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc"}
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	address, err := shim.CreateSocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), group, false)
	if err != nil {
		return nil, err
	}
	// Everything but the fork happens before the socket exists: containerd
	// kills `start` (SIGKILL, no defer runs) when the CRI call's deadline
	// passes, and a socket made before that leaks; once the child runs, it
	// owns the socket and removes it at exit (issue 27).
	//
	// The long-running process gets no bootstrap params; keep the runtime
	// options for it (the sandbox API never resends them).
	if opts := runtimeOptions(params, legacyOpts); opts != nil {
		if _, err := options.ConfigPath(opts); err != nil {
			return nil, err
		}
		if err := options.Save(bundle, opts); err != nil {
			return nil, fmt.Errorf("save runtime options: %w", err)
		}
	}

	cmd, err := m.command(ns, id, params, bundle)
	if err != nil {
		return nil, err
	}
	// The shim library removes the socket of the shim's own id at exit; the
	// pod's socket is named after the group, which can differ.
	cmd.Env = append(cmd.Env, AddressEnv+"="+address, sandbox.BootstrapAtEnv+"="+strconv.FormatInt(began.UnixNano(), 10))
	sock, err := listen(address)
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			// The pod's shim is alive: this task joins it.
			result.Address = address
			return result, nil
		}
		return nil, err
	}
	defer sock.Close()
	defer func() {
		if retErr != nil {
			_ = shim.RemoveSocket(address)
		}
	}()

	cmd.ExtraFiles = []*os.File{sock}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start shim process: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = cmd.Process.Kill()
		}
	}()
	// `start` exits right after this; Wait only avoids a zombie meanwhile.
	go func() { _ = cmd.Wait() }()

	// Raising the shim's score above containerd's is always allowed; if the
	// host still refuses, the shim runs with containerd's score.
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		log.G(ctx).WithError(err).Warn("cannot adjust the shim's OOM score; continuing")
	}
	result.Address = address
	return result, nil
}

// listen creates the shim socket and returns it as a file for the child.
// A live socket yields ErrAlreadyExists; a stale one is replaced.
func listen(address string) (*os.File, error) {
	l, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			return nil, errdefs.ErrAlreadyExists
		}
		if err := shim.RemoveSocket(address); err != nil {
			return nil, fmt.Errorf("remove stale shim socket: %w", err)
		}
		if l, err = shim.NewSocket(address); err != nil {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
	}
	f, err := l.File()
	// Closing a Go unix listener unlinks its path by default; the child
	// serves on the duplicate in f, so the path must stay.
	l.SetUnlinkOnClose(false)
	l.Close() // the duplicate in f keeps the socket listening
	if err != nil {
		_ = shim.RemoveSocket(address)
		return nil, err
	}
	return f, nil
}

// command re-executes this binary as the long-running shim.
func (m *manager) command(ns, id string, params *bootapi.BootstrapParams, bundle string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", params.GetContainerdGrpcAddress()}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = bundle
	env := make([]string, 0, len(os.Environ())+2)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "TTRPC_ADDRESS=") && !strings.HasPrefix(e, "GRPC_ADDRESS=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env,
		"TTRPC_ADDRESS="+params.GetContainerdTtrpcAddress(),
		"GRPC_ADDRESS="+params.GetContainerdGrpcAddress(),
	)
	// Own process group: signals to containerd's group do not reach the pod.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, nil
}

// fixLegacy handles containerd ≤ 2.2, which writes the bare runtime options
// Any on stdin. containerd's shim library first tries to read that as
// BootstrapParams, which "succeeds" with the Any's type URL as the instance
// id and its value as the namespace. An id that is not a valid identifier
// gives that away; the real values are in the legacy flags and environment.
func (m *manager) fixLegacy(p *bootapi.BootstrapParams, args []string) (*bootapi.BootstrapParams, *anypb.Any) {
	if p == nil {
		p = &bootapi.BootstrapParams{}
	}
	if identifiers.Validate(p.GetInstanceID()) == nil {
		return p, nil
	}
	var opts *anypb.Any
	if strings.Contains(p.GetInstanceID(), "/") {
		opts = &anypb.Any{TypeUrl: p.GetInstanceID(), Value: []byte(p.GetNamespace())}
	}
	flags := legacyFlags(args)
	fixed := &bootapi.BootstrapParams{
		InstanceID:             flags["id"],
		Namespace:              flags["namespace"],
		ContainerdGrpcAddress:  flags["address"],
		ContainerdBinary:       flags["publish-binary"],
		ContainerdTtrpcAddress: m.cfg.Getenv("TTRPC_ADDRESS"),
		LogLevel:               bootapi.LogLevel_LOG_LEVEL_INFO,
	}
	if _, ok := flags["debug"]; ok {
		fixed.LogLevel = bootapi.LogLevel_LOG_LEVEL_DEBUG
	}
	if fixed.ContainerdGrpcAddress == "" {
		fixed.ContainerdGrpcAddress = m.cfg.Getenv("GRPC_ADDRESS")
	}
	return fixed, opts
}

// legacyFlags picks the shim's `-name value` flags out of argv.
func legacyFlags(args []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		if a == args[i] { // not a flag: the action
			continue
		}
		if k, v, ok := strings.Cut(a, "="); ok {
			out[k] = v
			continue
		}
		switch a {
		case "debug", "v", "version", "info":
			out[a] = ""
		default:
			if i+1 < len(args) {
				out[a] = args[i+1]
				i++
			}
		}
	}
	return out
}

// runtimeOptions finds the runtime options among the bootstrap extensions.
func runtimeOptions(p *bootapi.BootstrapParams, legacy *anypb.Any) *anypb.Any {
	if legacy != nil {
		return legacy
	}
	for _, ext := range p.GetExtensions() {
		v := ext.GetValue()
		if v == nil {
			continue
		}
		if _, err := options.ConfigPath(v); err == nil || strings.HasSuffix(v.GetTypeUrl(), "runtimeoptions.v1.Options") {
			return v
		}
	}
	return nil
}

// Stop is `delete`: containerd runs it, in the task's bundle, when a shim
// died or a task's creation failed. If the task is the pod's sandbox, or the
// pod's shim is gone, the pod VM is killed and its state removed; otherwise
// the live shim still owns the pod and nothing is touched.
func (m *manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	status := shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL)}
	if _, err := namespaces.NamespaceRequired(ctx); err != nil {
		return status, err
	}
	var err error
	bundle := ""
	if o, ok := ctx.Value(shim.OptsKey{}).(shim.Opts); ok {
		bundle = o.BundlePath
	}
	if bundle == "" {
		if bundle, err = os.Getwd(); err != nil {
			return status, err
		}
	}
	role := options.Role{SandboxID: id, IsSandbox: true}
	if spec, err := options.ReadSpec(bundle); err != nil {
		log.G(ctx).WithError(err).Warn("delete: cannot read the task's spec; treating it as its own pod")
	} else if spec != nil {
		if r, err := options.Classify(id, spec.Annotations); err == nil {
			role = r
		} else {
			log.G(ctx).WithError(err).Warn("delete: bad pod annotations; treating the task as its own pod")
		}
	}
	if !role.IsSandbox && shimAlive(bundle) {
		return status, nil
	}
	if m.cfg.Cleanup == nil {
		return status, fmt.Errorf("delete: no cleanup function: %w", errdefs.ErrNotImplemented)
	}
	dir := pod.StateDir(pod.RunDir(m.cfg.Getenv), role.SandboxID)
	if err := m.cfg.Cleanup(ctx, dir); err != nil {
		return status, fmt.Errorf("delete: clean up pod %s (%s): %w", role.SandboxID, dir, err)
	}
	if role.IsSandbox {
		// containerd runs delete for the sandbox when it has given up on
		// the pod's shim (its connection dropped). A shim still running
		// then serves nothing containerd will ever ask for again.
		ns, _ := namespaces.Namespace(ctx)
		if err := terminateShim(ctx, ns, role.SandboxID); err != nil {
			log.G(ctx).WithError(err).Warn("delete: stopping the pod's shim")
		}
		// A shim that was killed (-9, OOM) never removed its socket, and
		// nothing else will: the pod's socket is named after the pod, not
		// the task containerd cleans up.
		if addr := recordedAddress(bundle); addr != "" && !shim.CanConnect(addr) {
			if err := shim.RemoveSocket(addr); err != nil && !errors.Is(err, os.ErrNotExist) {
				log.G(ctx).WithError(err).Warn("delete: removing the dead shim's socket")
			}
		}
	}
	return status, nil
}

// terminateShim ends the shim process serving pod id in namespace ns, if
// one still runs: SIGTERM (it stops the VM and exits), SIGKILL after a grace.
// The shim is recognised by its own argv: this binary, -namespace ns, -id
// id, and no start/delete action.
func terminateShim(ctx context.Context, ns, id string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if !isPodShim(argv, filepath.Base(self), ns, id) {
			continue
		}
		log.G(ctx).WithField("pid", pid).Info("delete: stopping the pod's shim, which containerd no longer talks to")
		unix.Kill(pid, unix.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for running(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		unix.Kill(pid, unix.SIGKILL)
	}
	return nil
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// isPodShim reports whether argv is the serving shim of pod id.
func isPodShim(argv []string, name, ns, id string) bool {
	if len(argv) == 0 || filepath.Base(argv[0]) != name {
		return false
	}
	switch argv[len(argv)-1] {
	case "start", "delete":
		return false
	}
	flag := func(f string) string {
		for i := 0; i+1 < len(argv); i++ {
			if argv[i] == f || argv[i] == "-"+f {
				return argv[i+1]
			}
		}
		return ""
	}
	return flag("-id") == id && flag("-namespace") == ns
}

// shimAlive reports whether the shim containerd recorded in the bundle
// still answers: containerd ≥ 2.3 writes bootstrap.json, older ones write
// "address". With neither it cannot tell and says alive, so that deleting
// one workload never destroys a pod that may still be running; the pod's
// own sandbox task cleans it up.
func shimAlive(bundle string) bool {
	addr := recordedAddress(bundle)
	if addr == "" {
		return true
	}
	return shim.CanConnect(addr)
}

// recordedAddress is the shim address containerd recorded in the bundle
// ("" when it recorded none).
func recordedAddress(bundle string) string {
	if data, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var res struct {
			Address string `json:"address"`
		}
		if json.Unmarshal(data, &res) == nil && res.Address != "" {
			return res.Address
		}
	}
	a, err := shim.ReadAddress(filepath.Join(bundle, "address"))
	if err != nil {
		return ""
	}
	return a
}

// Info answers `-info`: name, version, the guest's features and the
// runtime options echoed back once they parse.
func (m *manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	feat, err := marshalFeatures()
	if err != nil {
		return nil, err
	}
	info := &types.RuntimeInfo{
		Name:     m.name,
		Version:  &types.RuntimeVersion{Version: version.Version, Revision: version.Revision},
		Features: feat,
	}
	data, err := io.ReadAll(io.LimitReader(optionsR, 1<<20))
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return info, nil
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("runtime options: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if _, err := options.ConfigPath(&a); err != nil {
		return nil, err
	}
	info.Options = &a
	return info, nil
}

// Abandoned runs first in the long-running shim (the process `start`
// forked, which alone has AddressEnv): it reports whether containerd already
// gave up on it, and then removes the pod's socket. containerd reads the
// shim's log through the FIFO "log" in the bundle; when the CRI call's
// deadline passes during `start`, containerd closes that FIFO and removes
// the bundle. The shim library would then fail opening the log, or block on
// it forever, and exit (os.Exit) without the socket `start` made for it
// being removed (issue 27).
func Abandoned(getenv func(string) string) (bool, string) {
	address := getenv(AddressEnv)
	if address == "" {
		return false, ""
	}
	// O_NONBLOCK: opening a FIFO for writing fails with ENXIO when nobody
	// reads it, instead of blocking.
	f, err := os.OpenFile("log", os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err == nil {
		f.Close()
		return false, ""
	}
	if !errors.Is(err, syscall.ENXIO) && !errors.Is(err, os.ErrNotExist) {
		return false, ""
	}
	_ = shim.RemoveSocket(address)
	return true, fmt.Sprintf("containerd no longer reads this shim's log (%v): it gave up on the shim during start; removed %s and exiting", err, address)
}
