package manager_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/shim/pod"
)

// containerdBinary finds a containerd 2.x binary: $COCO_CONTAINERD, or the
// one the integration harness caches.
func containerdBinary() string {
	if p := os.Getenv("COCO_CONTAINERD"); p != "" {
		return p
	}
	m, _ := filepath.Glob("/var/cache/coco/peers-containerd-*/bin/containerd")
	if len(m) > 0 {
		return m[len(m)-1]
	}
	return ""
}

// TestRealContainerd has a real containerd drive the test shim through its
// Go client, the way `ctr run` does: FIFO stdio, exit status, exec, kill,
// delete, and the shim's cleanup. Only the VM is fake.
func TestRealContainerd(t *testing.T) {
	bin := containerdBinary()
	if bin == "" {
		t.Skip("no containerd binary: set COCO_CONTAINERD or build the integration peers; this would check that containerd drives the shim end to end")
	}
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root; this would check that containerd drives the shim end to end")
	}
	e, _ := setup(t)
	binDir := filepath.Dir(e.bin)
	cfg := filepath.Join(e.root, "config.toml")
	sock := filepath.Join(e.root, "ctrd.sock")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(e.root, "root"), filepath.Join(e.root, "state"), sock, sock+".ttrpc")), 0o644)
	var logs bytes.Buffer
	daemon := exec.Command(bin, "--config", cfg)
	daemon.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"), pod.RunDirEnv+"="+e.runDir)
	daemon.Stdout, daemon.Stderr = &logs, &logs
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Kill()
		daemon.Wait()
		if t.Failed() {
			t.Logf("containerd log:\n%s", logs.String())
		}
	})
	var client *containerd.Client
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; {
		client, err = containerd.New(sock, containerd.WithTimeout(2*time.Second))
		if err == nil {
			if ok, _ := client.IsServing(context.Background()); ok {
				break
			}
			client.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "coco-test"), 60*time.Second)
	defer cancel()
	rootfs := filepath.Join(e.root, "rootfs")
	os.MkdirAll(rootfs, 0o755)

	run := func(id string, args ...string) (uint32, string, containerd.Task, containerd.Container) {
		t.Helper()
		c, err := client.NewContainer(ctx, id, containerd.WithRuntime("io.containerd.coco.v2", nil),
			containerd.WithNewSpec(oci.WithProcessArgs(args...), oci.WithRootFSPath(rootfs)))
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &out, &errOut), cio.WithFIFODir(filepath.Join(e.root, "fifo"))))
		if err != nil {
			t.Fatal(err)
		}
		exitC, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if args[0] == "sleep" {
			return 0, "", task, c
		}
		st := <-exitC
		if _, err := task.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		return st.ExitCode(), out.String(), nil, nil
	}

	if code, out, _, _ := run("echo1", "echo", "hello", "containerd"); code != 0 || out != "hello containerd\n" {
		t.Fatalf("echo: exit %d, output %q", code, out)
	}
	if code, _, _, _ := run("exit7", "exit", "7"); code != 7 {
		t.Fatalf("exit 7: got %d", code)
	}

	_, _, task, c := run("long", "sleep")
	var execOut, execErr bytes.Buffer
	proc, err := task.Exec(ctx, "e1", &specs.Process{Args: []string{"echo", "from", "exec"}, Cwd: "/"},
		cio.NewCreator(cio.WithStreams(nil, &execOut, &execErr), cio.WithFIFODir(filepath.Join(e.root, "fifo"))))
	if err != nil {
		t.Fatal(err)
	}
	execExit, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s := <-execExit; s.ExitCode() != 0 {
		t.Fatalf("exec exit %d", s.ExitCode())
	}
	if _, err := proc.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if execOut.String() != "from exec\n" {
		t.Fatalf("exec output %q", execOut.String())
	}
	if err := task.Kill(ctx, 9); err != nil {
		t.Fatal(err)
	}
	st, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := <-st; s.ExitCode() != 137 {
		t.Fatalf("killed task exit %d, want 137", s.ExitCode())
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	// Every shim has exited and containerd's `delete` cleaned the pods.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("pgrep", "-f", e.bin).Output()
		ents, _ := os.ReadDir(e.runDir)
		if len(strings.TrimSpace(string(out))) == 0 && len(ents) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: shims %q, pod dirs %v", out, ents)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
