package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

func TestOrphanExitsExecsBeforeInit(t *testing.T) {
	var l liveProcs
	l.observe(&eventstypes.TaskStart{ContainerID: "b", Pid: 10})
	l.observe(&eventstypes.TaskStart{ContainerID: "a", Pid: 11})
	l.observe(&eventstypes.TaskExecStarted{ContainerID: "b", ExecID: "x", Pid: 12})
	l.observe(&eventstypes.TaskExecStarted{ContainerID: "a", ExecID: "y", Pid: 13})
	l.observe(&eventstypes.TaskStart{ContainerID: "gone", Pid: 14})
	l.observe(&eventstypes.TaskExit{ContainerID: "gone", ID: "gone", Pid: 14})

	var got []string
	for _, e := range l.orphanExits(255) {
		x := e.Message.(*eventstypes.TaskExit)
		if e.Topic != "/tasks/exit" || x.ExitStatus != 255 || x.ExitedAt == nil {
			t.Fatalf("bad synthesized exit %+v", e)
		}
		got = append(got, x.ContainerID+"/"+x.ID)
	}
	want := "a/y b/x a/a b/b"
	if strings.Join(got, " ") != want {
		t.Fatalf("orphan exits %v, want %s", got, want)
	}
	if len(l.orphanExits(255)) != 0 {
		t.Fatal("orphan exits reported twice")
	}
}

func TestDiskSerialFitsVirtio(t *testing.T) {
	a, b := diskSerial(strings.Repeat("x", 64)), diskSerial("y")
	if len(a) > 20 || len(b) > 20 || a == b {
		t.Fatalf("serials %q %q must be distinct and at most 20 bytes", a, b)
	}
}

func TestHostFiles(t *testing.T) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644)
	sp := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/etc/hosts", Type: "bind", Source: hosts, Options: []string{"rbind", "ro"}},
		{Destination: "/data", Type: "bind", Source: dir},    // directory: not copied
		{Destination: "/proc", Type: "proc", Source: "proc"}, // not a bind
		{Destination: "/gone", Source: filepath.Join(dir, "missing"), Options: []string{"bind"}},
	}}
	files, err := hostFiles(sp, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Destination != "/etc/hosts" || string(files[0].Content) != "127.0.0.1 localhost\n" || files[0].Mode != 0o644 {
		t.Fatalf("files = %+v", files)
	}

	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, maxHostFile+1), 0o644)
	sp.Mounts = append(sp.Mounts, specs.Mount{Destination: "/big", Type: "bind", Source: big})
	_, err = hostFiles(sp, false)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "/big") {
		t.Fatalf("oversized file: err = %v", err)
	}
}

// pipeStreams is an in-memory streamOpener: the "guest" end of each stream
// is kept so the test can play the agent.
type pipeStreams struct{ guest map[string]net.Conn }

func (p *pipeStreams) OpenStream(_ context.Context, cid, exec, kind string) (net.Conn, error) {
	host, guest := net.Pipe()
	p.guest[cid+"/"+exec+"/"+kind] = guest
	return host, nil
}

type closeBuffer struct {
	strings.Builder
	closed chan struct{}
}

func (b *closeBuffer) Close() error { close(b.closed); return nil }

func TestConnectStdio(t *testing.T) {
	p := &pipeStreams{guest: map[string]net.Conn{}}
	stdout := &closeBuffer{closed: make(chan struct{})}
	stdinR, stdinW := io.Pipe()
	in, out, errf, _, err := connectStdio(context.Background(), p, "c1", "", IO{Stdin: stdinR, Stdout: stdout})
	if err != nil {
		t.Fatal(err)
	}
	if in != stdioPlaceholder || out != stdioPlaceholder || errf != "" {
		t.Fatalf("fields %q %q %q", in, out, errf)
	}
	if _, ok := p.guest["c1/-/stderr"]; ok {
		t.Fatal("stderr stream opened without a host writer")
	}
	go func() {
		stdinW.Write([]byte("ping"))
		stdinW.Close()
	}()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(p.guest["c1/-/stdin"], buf); err != nil || string(buf) != "ping" {
		t.Fatalf("guest stdin got %q, %v", buf, err)
	}
	g := p.guest["c1/-/stdout"]
	g.Write([]byte("pong"))
	g.Close()
	select {
	case <-stdout.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("host stdout not closed after the guest stream ended")
	}
	if stdout.String() != "pong" {
		t.Fatalf("host stdout %q", stdout.String())
	}
}

func TestCleanupKillsReferencingProcesses(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "pod")
	os.MkdirAll(filepath.Join(state, "vm"), 0o700)
	// A stand-in for a leftover VMM: its argv names the state directory.
	cmd := exec.Command("sh", "-c", "sleep 60 # "+state)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Until the child has exec'd sh, its argv is the test binary's.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		if strings.Contains(string(b), state) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stand-in never showed %s in its argv", state)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Cleanup(ctx, state); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("leftover process still running")
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("state dir still there: %v", err)
	}
	if err := Cleanup(ctx, state); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
}

func TestBuildRootfsImageFromSpecRoot(t *testing.T) {
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Skip("mkfs.erofs not installed (scripts/install-deps.sh); would check the image is built from spec.Root.Path")
	}
	bundle, root := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(root, "hello"), []byte("hi"), 0o644)
	img := filepath.Join(t.TempDir(), "r.erofs")
	// An absolute root outside the bundle (ctr run --rootfs) is used as is.
	if err := buildRootfsImage(context.Background(), "", bundle, root, nil, img); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(img); err != nil || fi.Size() == 0 {
		t.Fatalf("image: %v", err)
	}
	// A relative root that does not exist names the path.
	err := buildRootfsImage(context.Background(), "", bundle, "rootfs", nil, img+"2")
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), filepath.Join(bundle, "rootfs")) {
		t.Fatalf("missing rootfs: %v", err)
	}
}

func TestBootstrapAt(t *testing.T) {
	env := map[string]string{BootstrapAtEnv: "1795345485941304383"}
	if got := bootstrapAt(func(k string) string { return env[k] }); got.UnixNano() != 1795345485941304383 {
		t.Fatalf("bootstrapAt = %v", got)
	}
	for _, bad := range []string{"", "soon", "-5", "0"} {
		env[BootstrapAtEnv] = bad
		if got := bootstrapAt(func(k string) string { return env[k] }); !got.IsZero() {
			t.Errorf("%q: bootstrapAt = %v, want zero", bad, got)
		}
	}
	if initAt.IsZero() || initAt.After(time.Now()) {
		t.Errorf("initAt = %v", initAt)
	}
}

// stuckHotplugger is a VM whose guest never releases a hot-plugged disk:
// RemoveDisk returns only when its context ends.
type stuckHotplugger struct {
	hypervisor.VM
	removed chan string
}

func (v *stuckHotplugger) AddDisk(context.Context, hypervisor.Disk) error { return nil }

func (v *stuckHotplugger) RemoveDisk(ctx context.Context, id string) error {
	if _, ok := ctx.Deadline(); !ok {
		return fmt.Errorf("RemoveDisk(%s) called without a deadline: a guest that never releases the disk would hang the caller forever", id)
	}
	v.removed <- id
	return nil
}

// A failed CreateTask detaches the rootfs it attached with its caller's
// context stripped of cancellation; the detach must still be bounded.
func TestDetachRootfsIsBounded(t *testing.T) {
	image := filepath.Join(t.TempDir(), "c1.erofs")
	if err := os.WriteFile(image, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	vm := &stuckHotplugger{removed: make(chan string, 1)}
	s := &vmSandbox{vm: vm, disks: map[string]string{"c1": image}}
	s.detachRootfs(context.WithoutCancel(context.Background()), "c1")
	select {
	case id := <-vm.removed:
		if id != diskSerial("c1") {
			t.Fatalf("removed disk %q, want %q", id, diskSerial("c1"))
		}
	default:
		t.Fatal("RemoveDisk was not called with a deadline")
	}
	if _, err := os.Stat(image); !os.IsNotExist(err) {
		t.Fatalf("rootfs image left behind: %v", err)
	}
	if len(s.disks) != 0 {
		t.Fatalf("disk still recorded: %v", s.disks)
	}
}

type consoleVM struct {
	hypervisor.VM
	console string
}

func (v consoleVM) Info() hypervisor.Info { return hypervisor.Info{ConsoleLog: v.console} }

func TestExplainMissingDiskQuotesHotplugErrors(t *testing.T) {
	console := filepath.Join(t.TempDir(), "console.log")
	log := "\x1b[2JSeaBIOS\n" +
		"[    1.45] shpchp 0000:00:10.0: HPC vendor_id 1b36 device_id e\n" +
		"[    1.46] shpchp 0000:00:10.0: pci_hp_register failed with error -16\x1b[0m\n" +
		"[    1.46] shpchp 0000:00:10.0: Slot initialization failed\n" +
		"[    2.00] virtio_blk virtio1: [vda] 59224 512-byte logical blocks\n"
	if err := os.WriteFile(console, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &vmSandbox{vm: consoleVM{console: console}}
	// As the agent client returns it: gRPC codes already made native.
	agentErr := errgrpc.ToNative(errgrpc.ToGRPC(fmt.Errorf("rootfs.block.serial: no disk with serial \"r1\" appeared within 10s: %w", errdefs.ErrNotFound)))
	block := &api.PrepareContainerRequest{Rootfs: &api.Rootfs{Source: &api.Rootfs_Block{Block: &api.BlockDevice{Serial: "r1"}}}}

	err := s.explainMissingDisk(block, agentErr)
	msg := err.Error()
	for _, want := range []string{"no disk with serial", "pci_hp_register failed with error -16", "Slot initialization failed"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "vendor_id") || strings.Contains(msg, "virtio_blk") || strings.ContainsRune(msg, 0x1b) {
		t.Errorf("error %q quotes unrelated or control text", msg)
	}
	if !errdefs.IsNotFound(err) {
		t.Errorf("error %v lost its NotFound code", err)
	}

	agentRoot := &api.PrepareContainerRequest{Rootfs: &api.Rootfs{Source: &api.Rootfs_Agent{Agent: &emptypb.Empty{}}}}
	if got := s.explainMissingDisk(agentRoot, agentErr); got != agentErr {
		t.Errorf("a rootfs that was not hot-plugged got a hot-plug explanation: %v", got)
	}
	other := errgrpc.ToNative(errgrpc.ToGRPC(fmt.Errorf("policy: %w", errdefs.ErrPermissionDenied)))
	if got := s.explainMissingDisk(block, other); got != other {
		t.Errorf("a non-NotFound error was rewritten: %v", got)
	}
}

// A hung VM's report carries the vsock helper's last words when it left
// some (vhost-device-vsock's panicked worker), and nothing otherwise.
func TestHelperTail(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.log")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	panicked := filepath.Join(dir, "vhost-device-vsock.log")
	if err := os.WriteFile(panicked, []byte("thread 'vring_worker' panicked at src/vsock_conn.rs:238:64:\nBroken pipe\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", empty, filepath.Join(dir, "missing.log")} {
		if got := helperTail(p); got != "" {
			t.Errorf("helperTail(%q) = %q, want nothing", p, got)
		}
	}
	if got := helperTail(panicked); !strings.Contains(got, "vring_worker' panicked") || !strings.Contains(got, panicked) {
		t.Errorf("helperTail = %q, want the panic and the log's path", got)
	}
}
