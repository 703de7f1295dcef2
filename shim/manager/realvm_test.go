package manager_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/sandbox"
)

// TestRealVM runs the real shim (real sandbox, QEMU, guest) under a real
// containerd: output, exit code, exec with stdin closed by CloseIO.
// Opt-in (COCO_SHIM_REALVM=1): it boots VMs, which the integration suite
// covers through CRI; this is the shim author's smoke test of the same path
// through containerd's task API.
func TestRealVM(t *testing.T) {
	if os.Getenv("COCO_SHIM_REALVM") != "1" {
		t.Skip("set COCO_SHIM_REALVM=1 (needs QEMU, build/guest and a containerd binary) to boot a real pod VM")
	}
	bin := containerdBinary()
	busybox, _ := exec.LookPath("busybox")
	if bin == "" || busybox == "" {
		t.Skip("needs a containerd binary and busybox")
	}
	repo, _ := filepath.Abs("../..")
	e, _ := setup(t)
	shimBin := filepath.Join(e.root, "real", "containerd-shim-coco-v2")
	build := exec.Command("go", "build", "-tags", "coco_glue", "-o", shimBin, "github.com/coco-runtime/coco/shim/cmd/containerd-shim-coco-v2")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	rootfs := filepath.Join(e.root, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	data, _ := os.ReadFile(busybox)
	os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755)
	for _, a := range []string{"sh", "echo", "cat"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", a))
	}
	cfg := filepath.Join(e.root, "config.toml")
	sock := filepath.Join(e.root, "ctrd.sock")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version = 3\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		filepath.Join(e.root, "root"), filepath.Join(e.root, "state"), sock, sock+".ttrpc")), 0o644)
	var logs bytes.Buffer
	daemon := exec.Command(bin, "--config", cfg)
	daemon.Env = append(os.Environ(), "PATH="+filepath.Dir(shimBin)+":"+os.Getenv("PATH"),
		"COCO_SHARE_DIR="+filepath.Join(repo, "build", "guest"))
	daemon.Stdout, daemon.Stderr = &logs, &logs
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// After a failure: stop what this test started (shim, VM), then containerd.
		if out, _ := exec.Command("pgrep", "-f", shimBin).Output(); len(out) > 0 {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		sandbox.Cleanup(context.Background(), "/run/coco/vm1")
		daemon.Process.Kill()
		daemon.Wait()
		if t.Failed() {
			t.Logf("containerd log:\n%s", logs.String())
		}
	})
	var client *containerd.Client
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if client, err = containerd.New(sock); err == nil {
			if ok, _ := client.IsServing(context.Background()); ok {
				break
			}
			client.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd: %v", err)
		}
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "coco-vm"), 4*time.Minute)
	defer cancel()

	c, err := client.NewContainer(ctx, "vm1", containerd.WithRuntime("io.containerd.coco.v2", nil),
		containerd.WithNewSpec(oci.WithProcessArgs("/bin/sh", "-c", "echo hello from the guest; sleep 1000")))
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	fifos := cio.WithFIFODir(filepath.Join(e.root, "fifo"))
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &out, &errOut), fifos),
		containerd.WithRootFS([]mount.Mount{{Type: "bind", Source: rootfs, Options: []string{"rbind", "ro"}}}))
	if err != nil {
		t.Fatal(err)
	}
	exitC, _ := task.Wait(ctx)
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	var execOut, execErr bytes.Buffer
	proc, err := task.Exec(ctx, "cat", &specs.Process{Args: []string{"/bin/cat"}, Cwd: "/"},
		cio.NewCreator(cio.WithStreams(pr, &execOut, &execErr), fifos))
	if err != nil {
		t.Fatal(err)
	}
	execExit, _ := proc.Wait(ctx)
	if err := proc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pw.Write([]byte("through the vsock\n"))
	pw.Close()
	if err := proc.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-execExit:
		if st.ExitCode() != 0 {
			t.Fatalf("cat exit %d", st.ExitCode())
		}
	case <-ctx.Done():
		t.Fatal("cat did not exit after CloseIO")
	}
	proc.Delete(ctx)
	if execOut.String() != "through the vsock\n" {
		t.Fatalf("cat output %q", execOut.String())
	}
	task.Kill(ctx, 9)
	st := <-exitC
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if st.ExitCode() != 137 || !strings.Contains(out.String(), "hello from the guest") {
		t.Fatalf("init exit %d, output %q / %q", st.ExitCode(), out.String(), errOut.String())
	}
	if err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing of the pod is left: no VMM or helper, no state directory.
	stateDir := "/run/coco/vm1"
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		procs, _ := exec.Command("pgrep", "-f", stateDir).Output()
		_, err := os.Stat(stateDir)
		if len(bytes.TrimSpace(procs)) == 0 && os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: processes %q, state dir err %v", procs, err)
		}
	}
}
