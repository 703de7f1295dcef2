package clh

import (
	"context"
	"errors"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// startFake builds a VM whose binary is the fake VMM in mode and starts it.
func startFake(t *testing.T, mode string) (*VM, string) {
	t.Helper()
	cfg, _ := testConfig(t, tee.SNP)
	bin, calls := fakeBinary(t, mode)
	cfg.Path = bin
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v.Stop(ctx)
	})
	if err := v.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return v, calls
}

// assertGone checks that a stopped VM left nothing: no process, no state.
func assertGone(t *testing.T, v *VM, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists after Stop (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(v.cfg.StateDir); !os.IsNotExist(err) {
		t.Errorf("state dir %s after Stop: %v, want gone", v.cfg.StateDir, err)
	}
}

func TestStartDialStopWithFakeBinary(t *testing.T) {
	v, calls := startFake(t, modeNormal)
	ctx := ctxT(t)
	info := v.Info()
	if info.PID <= 0 || info.Accel != "kvm" || info.StateDir != v.cfg.StateDir {
		t.Errorf("Info = %+v", info)
	}
	if err := syscall.Kill(info.PID, 0); err != nil {
		t.Fatalf("VMM process %d not running: %v", info.PID, err)
	}
	// The sandbox's crash cleanup finds the VMM by its argv naming the
	// state directory.
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(info.PID) + "/cmdline")
	if err != nil || !strings.Contains(string(cmdline), "path="+v.cfg.StateDir+"/clh.sock") {
		t.Errorf("VMM argv %q does not name the state directory %s (%v)", cmdline, v.cfg.StateDir, err)
	}
	if err := v.Start(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second Start: %v, want ErrFailedPrecondition", err)
	}

	conn, err := v.Dial(ctx, 1024)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Errorf("echo over hybrid vsock: %q, %v", buf, err)
	}
	conn.Close()

	if err := v.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := v.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 0 || st.Reason != "shut down by request" || st.ExitedAt.IsZero() {
		t.Errorf("exit status = %+v, want code 0, shut down by request", st)
	}
	got := readCalls(t, calls)
	want := []string{"GET vmm.ping", "PUT vm.create", "PUT vm.boot", "PUT vm.shutdown", "PUT vmm.shutdown"}
	// Pings before the API answered are not recorded; the rest is exact.
	if !reflect.DeepEqual(got, want) {
		t.Errorf("API calls = %q, want %q", got, want)
	}
	assertGone(t, v, info.PID)
	if err := v.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStartFailsWhenVMMExits(t *testing.T) {
	cfg, _ := testConfig(t, tee.None)
	cfg.Path, _ = fakeBinary(t, modeExitEarly)
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = v.Start(ctxT(t))
	if err == nil {
		t.Fatal("Start succeeded")
	}
	for _, w := range []string{"exited before its API answered", "exited with code 1", "log tail", "fake cloud-hypervisor refuses to start"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	st, werr := v.Wait(ctxT(t))
	if werr != nil || st.Code != 1 {
		t.Errorf("Wait = %+v, %v; want code 1", st, werr)
	}
	assertGone(t, v, v.Info().PID)
}

func TestStartFailsOnMissingBinaryAtLaunch(t *testing.T) {
	cfg, _ := testConfig(t, tee.None)
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The binary disappears between New and Start.
	os.Remove(cfg.Path)
	err = v.Start(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), cfg.Path) {
		t.Fatalf("Start: %v, want an error naming %s", err, cfg.Path)
	}
	if _, serr := os.Stat(cfg.StateDir); !os.IsNotExist(serr) {
		t.Errorf("state dir left after failed Start: %v", serr)
	}
}

func TestStopKillsAtDeadline(t *testing.T) {
	v, calls := startFake(t, modeIgnoreShutdown)
	pid := v.Info().PID
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := v.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := v.Wait(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 128+9 || st.Reason != "killed by signal 9 at the stop deadline" {
		t.Errorf("exit status = %+v, want SIGKILL at the deadline", st)
	}
	if got := readCalls(t, calls); !strings.Contains(strings.Join(got, ","), "PUT vm.shutdown,PUT vmm.shutdown") {
		t.Errorf("calls = %q: graceful steps not tried before the kill", got)
	}
	assertGone(t, v, pid)
}

func TestGuestPowerOff(t *testing.T) {
	v, _ := startFake(t, modePowerOff)
	st, err := v.Wait(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 0 || st.Reason != "guest powered off" {
		t.Errorf("exit status = %+v, want guest powered off", st)
	}
	_, err = v.Dial(ctxT(t), 1024)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "guest powered off") {
		t.Errorf("Dial after power-off: %v, want ErrFailedPrecondition naming the reason", err)
	}
	pid := v.Info().PID
	if err := v.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	assertGone(t, v, pid)
}

func TestDialNoAgentEndsWithConsoleTail(t *testing.T) {
	v, _ := startFake(t, modeNoAgent)
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	_, err := v.Dial(ctx, 1024)
	if err == nil {
		t.Fatal("Dial succeeded with no agent listening")
	}
	msg := err.Error()
	for _, w := range []string{"hybrid vsock", "vsock.sock", "port 1024", "console tail:", "fake guest: waiting for the host"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q lacks %q", msg, w)
		}
	}
	if !strings.HasSuffix(msg, "fake guest: waiting for the host") {
		t.Errorf("error does not end with the console tail: %q", msg)
	}
}

// TestDialStopsWhenVMMDies checks that a dial in progress gives up as soon
// as the VMM exits instead of waiting for its deadline.
func TestDialStopsWhenVMMDies(t *testing.T) {
	v, _ := startFake(t, modeNoAgent)
	pid := v.Info().PID
	go func() {
		time.Sleep(200 * time.Millisecond)
		syscall.Kill(pid, syscall.SIGKILL)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := v.Dial(ctx, 1024)
	if err == nil || !strings.Contains(err.Error(), "cloud-hypervisor exited (killed by signal 9)") {
		t.Fatalf("Dial: %v, want it to report the VMM's death", err)
	}
	if ctx.Err() != nil {
		t.Errorf("Dial ran to its one-minute deadline instead of stopping at the VMM's exit")
	}
	st, _ := v.Wait(ctxT(t))
	if st.Reason != "killed by signal 9" {
		t.Errorf("exit reason = %q", st.Reason)
	}
}

var _ hypervisor.VM = (*VM)(nil)

func TestDialUsesBootTimeoutWithoutDeadline(t *testing.T) {
	v, _ := startFake(t, modeNoAgent)
	v.cfg.BootTimeout = 300 * time.Millisecond
	start := time.Now()
	_, err := v.Dial(context.Background(), 1024)
	// Without the boot timeout this Dial would retry forever (the test
	// would hang); the bound below is loose on purpose.
	if err == nil {
		t.Fatal("Dial succeeded with no agent listening")
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Dial took %s with a 300ms boot timeout", d)
	}
}

// TestStartPassesTapsToTheProcess: the cloud-hypervisor process itself
// receives each tap (the fake logs the file each descriptor refers to),
// between vm.create and vm.boot, and inherits none at exec; the caller
// may close its taps once Start returned.
func TestStartPassesTapsToTheProcess(t *testing.T) {
	cfg, _ := testConfig(t, tee.None)
	bin, calls := fakeBinary(t, modeNormal)
	cfg.Path = bin
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Stop(context.Background()) })
	nics := testNICs(t, 2)
	ids := []string{fileID(t, nics[0].Tap), fileID(t, nics[1].Tap)}
	if err := v.AttachNICs(nics); err != nil {
		t.Fatal(err)
	}
	if err := v.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	pid := v.Info().PID
	fds, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	for _, e := range fds {
		target, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + e.Name())
		for _, n := range nics {
			if target == n.Tap.Name() {
				t.Errorf("VMM holds tap %s as fd %s after boot: inherited, not received", target, e.Name())
			}
		}
	}
	for _, n := range nics {
		n.Tap.Close()
	}
	want := []string{"GET vmm.ping", "PUT vm.create",
		"PUT vm.add-net", "fds nic-net0 " + ids[0],
		"PUT vm.add-net", "fds nic-net1 " + ids[1],
		"PUT vm.boot"}
	if got := readCalls(t, calls); !reflect.DeepEqual(got, want) {
		t.Errorf("VMM log = %q, want %q", got, want)
	}
	conn, err := v.Dial(ctxT(t), 1024)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if err := v.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	assertGone(t, v, pid)
}

func TestStartRefusesNICWithoutTap(t *testing.T) {
	cfg, _ := testConfig(t, tee.None)
	cfg.NICs = []hypervisor.NIC{{ID: "net0", MAC: testMAC(0)}}
	v, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v (a config may describe NICs before their taps exist)", err)
	}
	err = v.Start(ctxT(t))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `nic "net0": no tap file`) {
		t.Fatalf("Start: %v, want ErrInvalidArgument naming net0's missing tap", err)
	}
	if _, serr := os.Stat(cfg.StateDir); !os.IsNotExist(serr) {
		t.Errorf("state dir after refused Start: %v", serr)
	}
}
