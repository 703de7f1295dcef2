//go:build integration

package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Options configure one containerd instance.
type Options struct {
	Repo     string
	Bins     Binaries
	Handlers []Handler
	// Env is added to containerd's environment (and so to every shim's):
	// COCO_SHARE_DIR=<repo>/build/guest for the tests.
	Env []string
	// Root is the directory containerd lives in; "" = a new temp dir. Unix
	// socket paths are capped at 108 bytes, so keep it short.
	Root string
	Logf Logf
}

// Containerd is a running containerd with its config, CNI network and images.
type Containerd struct {
	Root    string
	Address string // gRPC socket
	LogPath string
	Bins    Binaries
	CRI     *CRI

	bridge string
	pid    int // set by Attach; Start uses cmd
	cmd    *exec.Cmd
	snap   *exec.Cmd // coco-snapshotter, when a handler uses it
	exited chan struct{}
	logf   Logf
}

// Start writes the config, starts containerd, waits until CRI answers and
// imports the test images. On error everything it made is torn down again.
func Start(ctx context.Context, o Options) (c *Containerd, err error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	suffix := randHex(3)
	root := o.Root
	if root == "" {
		if root, err = os.MkdirTemp("", "coco-it-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	c = &Containerd{
		Root:    root,
		Address: filepath.Join(root, "containerd.sock"),
		LogPath: filepath.Join(root, "containerd.log"),
		Bins:    o.Bins,
		bridge:  "cocoit" + suffix,
		logf:    o.Logf,
	}
	defer func() {
		if err != nil {
			c.Stop(context.Background())
			c = nil
		}
	}()
	// A test-only subnet, chosen per instance so parallel harnesses differ.
	b := make([]byte, 1)
	rand.Read(b)
	netw := network{Name: "coco-it-" + suffix, Bridge: c.bridge, Subnet: fmt.Sprintf("10.251.%d.0/24", b[0])}
	for _, d := range []string{"cni", "bin", "images", "logs", "certs.d"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return c, err
		}
	}
	cni, err := renderCNI(root, netw)
	if err != nil {
		return c, err
	}
	if err := os.WriteFile(filepath.Join(root, "cni", "10-coco-it.conflist"), cni, 0o644); err != nil {
		return c, err
	}
	config := renderConfig(root, PauseImage, o.Handlers, netw)
	configPath := filepath.Join(root, "config.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return c, err
	}
	// containerd finds shims by name on PATH: ours first, then its own runc shim and runc.
	links := map[string]string{"containerd-shim-runc-v2": o.Bins.RuncShim, "runc": o.Bins.Runc}
	if o.Bins.CocoShim != "" {
		links["containerd-shim-coco-v2"] = o.Bins.CocoShim
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, "bin", name)); err != nil {
			return c, err
		}
	}
	logFile, err := os.Create(c.LogPath)
	if err != nil {
		return c, err
	}
	defer logFile.Close()
	if usesSnapshotter(o.Handlers, CocoSnapshotter) && o.Bins.CocoSnapshotter != "" {
		if err := c.startSnapshotter(ctx, o.Bins.CocoSnapshotter, logFile); err != nil {
			return c, err
		}
	}
	cmd := exec.Command(o.Bins.Containerd, "--config", configPath, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "bin")+":"+os.Getenv("PATH"))
	cmd.Env = append(cmd.Env, o.Env...)
	// Its own process group: a Ctrl-C meant for `go test` must not kill it
	// before teardown can stop its pods.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return c, fmt.Errorf("harness: start containerd: %w", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(c.exited) }()
	if err := c.saveState(false); err != nil {
		return c, err
	}
	if err := c.waitServing(ctx, time.Minute); err != nil {
		return c, err
	}
	if err := c.importImages(ctx); err != nil {
		return c, err
	}
	return c, nil
}

// startSnapshotter runs coco-snapshotter for the guest-pull handlers,
// its snapshots under Root, and waits for its socket.
func (c *Containerd) startSnapshotter(ctx context.Context, bin string, log *os.File) error {
	sock := snapshotterSocket(c.Root)
	cmd := exec.Command(bin, "--root", filepath.Join(c.Root, "coco-snapshotter"), "--address", sock)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("harness: start coco-snapshotter: %w", err)
	}
	c.snap = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := os.Stat(sock); err == nil && st.Mode()&os.ModeSocket != 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("harness: coco-snapshotter did not listen on %s", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Containerd) waitServing(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("harness: containerd exited during start-up (%v); log tail:\n%s", c.cmd.ProcessState, c.LogTail(3000))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if _, err := os.Stat(c.Address); err == nil {
			cri, err := DialCRI(c.Address)
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				var st *runtimeapi.StatusResponse
				st, err = cri.Runtime.Status(cctx, &runtimeapi.StatusRequest{})
				cancel()
				if err == nil && runtimeReady(st) {
					c.CRI = cri
					return nil
				}
				cri.Close()
			}
			lastErr = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("harness: containerd did not serve CRI within %s (last error: %v); log tail:\n%s", limit, lastErr, c.LogTail(3000))
}

func runtimeReady(st *runtimeapi.StatusResponse) bool {
	for _, cond := range st.GetStatus().GetConditions() {
		if cond.Type == runtimeapi.RuntimeReady && cond.Status {
			return true
		}
	}
	return false
}

// importImages builds the busybox and pause images and imports them with ctr
// into k8s.io, where CRI looks for them (and finds the pinned sandbox image
// without pulling).
func (c *Containerd) importImages(ctx context.Context) error {
	bb, err := busyboxFiles("/bin/busybox")
	if err != nil {
		return err
	}
	pauseBin, err := os.ReadFile(c.Bins.Pause)
	if err != nil {
		return err
	}
	images := []struct {
		name  string
		files []file
		cfg   imageConfig
	}{
		{BusyboxImage, bb, imageConfig{Cmd: []string{"sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}},
		{PauseImage, []file{{Name: "pause", Mode: 0o755, Data: pauseBin}}, imageConfig{Entrypoint: []string{"/pause"}}},
	}
	for _, img := range images {
		archive := filepath.Join(c.Root, "images", path2file(img.name)+".tar")
		if err := writeImageArchive(archive, img.name, img.files, img.cfg); err != nil {
			return err
		}
		if out, err := c.Ctr(ctx, "-n", "k8s.io", "images", "import", archive); err != nil {
			return fmt.Errorf("harness: import %s: %w\n%s", img.name, err, out)
		}
	}
	return nil
}

func path2file(name string) string {
	return strings.NewReplacer("/", "_", ":", "_").Replace(name)
}

// Ctr runs ctr against this containerd and returns its stdout; on failure the
// error wraps the *exec.ExitError and carries ctr's stderr.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.Bins.Ctr, append([]string{"--address", c.Address}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// LogTail is the end of containerd's log (which includes the shims' stderr).
func (c *Containerd) LogTail(n int) string {
	b, _ := os.ReadFile(c.LogPath)
	return tail(b, n)
}

// PID of the containerd process (0 when not running).
func (c *Containerd) PID() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Stop removes every pod still there (so shims and VMs exit through the
// normal path), stops containerd, then cleans up what is left: shims of this
// containerd, mounts under Root, the CNI bridge and Root itself.
func (c *Containerd) Stop(ctx context.Context) error {
	var errs []error
	if c.CRI != nil {
		if err := c.CRI.RemoveAllPods(ctx); err != nil {
			errs = append(errs, err)
		}
		c.CRI.Close()
		c.CRI = nil
	}
	if c.cmd != nil && c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(15 * time.Second):
			c.cmd.Process.Kill()
			<-c.exited
		}
	} else if c.pid > 0 && isContainerd(c.pid, c.Root) {
		// Attached to a containerd another process started: not our child,
		// so poll for its end instead of waiting.
		syscall.Kill(c.pid, syscall.SIGTERM)
		if !waitGone(c.pid, 15*time.Second) {
			syscall.Kill(c.pid, syscall.SIGKILL)
			waitGone(c.pid, 5*time.Second)
		}
	}
	if c.snap != nil && c.snap.Process != nil {
		c.snap.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.snap.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.snap.Process.Kill()
			<-done
		}
	}
	// Shims outlive containerd by design; ours carry its socket address in argv.
	// TERM first so a shim can still stop its VM and remove its state.
	for _, pid := range processesMentioning(c.Address) {
		syscall.Kill(pid, syscall.SIGTERM)
		if !waitGone(pid, 5*time.Second) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		errs = append(errs, fmt.Errorf("harness: stopped leftover process %d mentioning %s", pid, c.Address))
	}
	if err := unmountUnder(c.Root); err != nil {
		errs = append(errs, err)
	}
	if c.bridge != "" {
		if _, err := os.Stat(filepath.Join("/sys/class/net", c.bridge)); err == nil {
			if out, err := exec.Command("ip", "link", "del", c.bridge).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("harness: delete bridge %s: %v: %s", c.bridge, err, out))
			}
		}
	}
	if err := os.RemoveAll(c.Root); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Warnings are the warning and error lines of containerd's log (which
// carries the shims' logs) that mention s, at most max of the last ones:
// what a failing test shows of the pod it was driving.
func (c *Containerd) Warnings(s string, max int) []string {
	b, err := os.ReadFile(c.LogPath)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if (strings.Contains(line, "level=warning") || strings.Contains(line, "level=error")) && strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}
