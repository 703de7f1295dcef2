//go:build integration

package qemu

// How the driver behaves when QEMU or the guest fails: killed, powered
// off, panicked, silent, unstartable, flooding its console.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
)

// TestQEMUKilled: QEMU dies under a running guest → Wait says so, and Stop
// still cleans everything up.
func TestQEMUKilled(t *testing.T) {
	env := setupBoot(t)
	cfg := env.config(t, "testinit.mode=silent")
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pid := vm.Info().PID
	dPID := daemonPID(cfg)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, err := vm.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Reason, "killed by signal 9") || st.Code != 137 || st.ExitedAt.IsZero() {
		t.Errorf("exit status = %+v, want killed by signal 9, code 137", st)
	}
	if strings.Contains(st.Reason, "stop deadline") {
		t.Errorf("reason blames Stop for an outside kill: %q", st.Reason)
	}
	if _, err := vm.Dial(ctx, 1024); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Dial to a dead VM: want FailedPrecondition, got %v", err)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
	assertNothingLeft(t, cfg, pid, dPID)
}

// TestGuestPowersOff: the guest powers itself off → Wait reports it.
func TestGuestPowersOff(t *testing.T) {
	env := setupBoot(t)
	cfg := env.config(t, "testinit.mode=poweroff")
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := vm.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reason != "guest powered off" || st.Code != 0 {
		t.Errorf("exit status = %+v, want guest powered off", st)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Error(err)
	}
	assertNothingLeft(t, cfg)
}

// TestDialSilentGuest: a guest that never listens → Dial fails at its
// deadline with an error naming the port and ending with the console tail.
// The test waits until the guest says it will not listen, so a slow host
// cannot turn "not booted yet" into a false pass.
func TestDialSilentGuest(t *testing.T) {
	env := setupBoot(t)
	cfg := env.config(t, "testinit.mode=silent")
	const deadline = 3 * time.Second
	cfg.BootTimeout = deadline // bounds each Dial
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer vm.Stop(ctx)
	const said = "testinit: not listening, as asked"
	for !strings.Contains(tailLines(vm.Info().ConsoleLog, 5), said) {
		if ctx.Err() != nil {
			t.Fatalf("guest never said %q; console:\n%s", said, tailLines(vm.Info().ConsoleLog, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	start := time.Now()
	_, err = vm.Dial(ctx, 1024)
	took := time.Since(start)
	if err == nil {
		t.Fatal("Dial succeeded against a guest that does not listen")
	}
	if took < deadline || took > deadline+3*time.Second {
		t.Errorf("Dial gave up after %s, want about the %s boot timeout", took, deadline)
	}
	msg := err.Error()
	for _, want := range []string{"port 1024", "vsock.sock", "not reachable after 3", "guest console", said} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if !errdefs.IsUnavailable(err) {
		t.Errorf("want errdefs.ErrUnavailable, got %v", err)
	}
	lines := strings.Split(msg[strings.Index(msg, "guest console"):], "\n")
	if n := len(lines) - 1; n > consoleTailLines {
		t.Errorf("console tail has %d lines, want at most %d", n, consoleTailLines)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Error(err)
	}
	assertNothingLeft(t, cfg)
}

// TestBadKernelPath: New refuses a missing kernel, naming it, and nothing
// is created on the host.
func TestBadKernelPath(t *testing.T) {
	env := setupBoot(t)
	cfg := env.config(t, "")
	cfg.Kernel = "/nonexistent/vmlinux"
	_, err := New(cfg)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/vmlinux") || !strings.Contains(err.Error(), "make guest-assets") {
		t.Fatalf("want an error naming the kernel and the fix, got %v", err)
	}
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("want InvalidArgument, got %v", err)
	}
	assertNothingLeft(t, cfg)
}

// TestGuestPanics: the guest kernel panics (its init exits) → with panic=1
// and -no-reboot QEMU ends within seconds and Wait says why.
func TestGuestPanics(t *testing.T) {
	env := setupBoot(t)
	cfg := env.config(t, "testinit.mode=exit")
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := vm.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Reason, "panicked") {
		t.Errorf("exit status = %+v, want a panic reason", st)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Error(err)
	}
	assertNothingLeft(t, cfg)
}

// TestQEMUFailsToStart: a VMM that exits at once (here /bin/false in place
// of QEMU) → Start fails saying so, and the daemon and state dir it had
// already created are gone.
func TestQEMUFailsToStart(t *testing.T) {
	if _, err := exec.LookPath(DefaultDaemon); err != nil {
		t.Skip("vhost-device-vsock not installed: scripts/install-deps.sh")
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, []byte("not a kernel"), 0o644)
	// A QEMU that says why on stderr and dies: what it printed (kept in
	// qemu.log in the state dir, not in shim memory) must reach the error.
	fake := filepath.Join(dir, "qemu-system-x86_64")
	script := "#!/bin/sh\necho 'fake qemu: first line' >&2\necho 'fake qemu: cannot start, says stderr' >&2\nexit 3\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := bootEnv{kernel: kernel}.config(t, "")
	cfg.Path = fake
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = vm.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "QEMU exited before its monitor answered") {
		t.Fatalf("want a start error saying QEMU exited, got %v", err)
	}
	if !strings.Contains(err.Error(), "fake qemu: first line\nfake qemu: cannot start, says stderr") {
		t.Fatalf("want QEMU's stderr in the start error, got %v", err)
	}
	if _, serr := os.Stat(cfg.StateDir); !os.IsNotExist(serr) {
		t.Errorf("state dir left behind after a failed start: %v", serr)
	}
	assertNothingLeft(t, cfg)
	if err := vm.Stop(ctx); err != nil {
		t.Errorf("Stop after a failed Start: %v", err)
	}
}

// TestStaleStateDir: sockets left in the state dir by a VM that crashed
// (files nobody listens on) do not break Start. The race the driver guards
// against (taking a stale vhost-user socket for a ready daemon) depends on
// timing and did not reproduce without the guard; this pins the outcome.
func TestStaleStateDir(t *testing.T) {
	env := setupBoot(t)
	cfg := env.config(t, "")
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vhost-user-vsock.sock", "vsock.sock", "qmp.sock"} {
		l, err := net.Listen("unix", filepath.Join(cfg.StateDir, name))
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close() // leaves the file, like a crash
	}
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer vm.Stop(ctx)
	c, err := vm.Dial(ctx, 1024)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := vm.Stop(ctx); err != nil {
		t.Error(err)
	}
	assertNothingLeft(t, cfg)
}

// TestConsoleFlood: a guest floods its serial console with ten times the
// cap through the real path (guest UART → QEMU "-chardev file" on the FIFO →
// the shim's copier); the host's console log stays under its cap and ends
// with the guest's newest output.
func TestConsoleFlood(t *testing.T) {
	env := setupBoot(t)
	cfg := env.config(t, "testinit.mode=flood")
	cfg.ConsoleLogMax = hypervisor.MinConsoleLogMax
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := vm.Stop(ctx); err != nil {
			t.Error(err)
		}
		assertNothingLeft(t, cfg)
	}()
	st, err := vm.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Reason, "powered off") {
		t.Fatalf("exit %+v, want the guest to power off after its flood", st)
	}
	b, err := os.ReadFile(vm.Info().ConsoleLog)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > int(cfg.ConsoleLogMax) || len(b) < int(cfg.ConsoleLogMax)/4 {
		t.Fatalf("console log is %d bytes; want at most the cap %d (and not empty)", len(b), cfg.ConsoleLogMax)
	}
	tail, err := hypervisor.Tail(vm.Info().ConsoleLog, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tail, "flood 007999") && !strings.Contains(tail, "flood done") {
		t.Fatalf("console log does not end with the guest's newest output: %q", tail)
	}
	if strings.Contains(string(b), "flood 000000 ") {
		t.Fatal("console log still holds the oldest flood line")
	}
}

// TestAbandonedDialsKeepVsockAlive: dials given up on mid-handshake (a
// CRI call's deadline) must not kill the VM's vsock. vhost-device-vsock
// panics when the guest's acceptance meets a host socket already closed;
// the dialler keeps it open until answered (vsock.linger). Before that, a
// handful of such dials left every later connection hanging.
func TestAbandonedDialsKeepVsockAlive(t *testing.T) {
	env := setupBoot(t)
	forEachBackend(t, func(t *testing.T, daemon string) { abandonedDials(t, env, daemon) })
}

func abandonedDials(t *testing.T, env bootEnv, daemon string) {
	cfg := env.config(t, "")
	cfg.Vsock.DaemonPath = daemon
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer vm.Stop(context.Background())
	c, err := vm.Dial(ctx, 1024) // the guest is up
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	abandoned := 0
	for i := range 40 {
		dctx, dcancel := context.WithTimeout(ctx, time.Duration(i%8)*250*time.Microsecond)
		if c, err := vm.Dial(dctx, 1024); err == nil {
			c.Close()
		} else {
			abandoned++
		}
		dcancel()
	}
	echo := func() error {
		dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
		defer dcancel()
		c, err := vm.Dial(dctx, 1024)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil {
			return fmt.Errorf("greeting: %w", err)
		}
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		if s, err := r.ReadString('\n'); err != nil || s != "ping\n" {
			return fmt.Errorf("echo %q: %v", s, err)
		}
		return nil
	}
	if err := echo(); err != nil {
		b, _ := os.ReadFile(filepath.Join(cfg.StateDir, "vhost-device-vsock.log"))
		t.Fatalf("after %d abandoned dials the guest no longer answers: %v\nvhost-device-vsock log:\n%s", abandoned, err, b)
	}
	t.Logf("%d of 40 dials abandoned mid-handshake; the guest still answers", abandoned)
}
