//go:build integration

// Command dev-containerd (`make dev-containerd`, `make dev-containerd-stop`)
// starts the integration tests' containerd in the background for people who
// want to poke at it with crictl or ctr, and stops it leaving nothing behind.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/coco-runtime/coco/integration/harness"
)

func main() {
	dir := flag.String("dir", "/run/coco-dev-containerd", "directory containerd lives in (keep it short: unix socket paths are capped at 108 bytes)")
	flag.Parse()
	var err error
	switch flag.Arg(0) {
	case "start":
		err = start(*dir)
	case "stop":
		err = stop(*dir)
	default:
		err = fmt.Errorf("usage: dev-containerd [-dir DIR] start|stop")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dev-containerd:", err)
		os.Exit(1)
	}
}

func start(dir string) error {
	ctx := context.Background()
	if _, err := os.Stat(filepath.Join(dir, "containerd.sock")); err == nil {
		return fmt.Errorf("a containerd already lives in %s: run `make dev-containerd-stop` first", dir)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "dev-containerd: "+format+"\n", args...) }
	repo, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	bins, err := harness.BuildAll(ctx, repo, logf)
	if err != nil {
		return err
	}
	if bins.CocoShimErr != nil {
		logf("warning: our shim did not build, only the runc handler will work: %v", bins.CocoShimErr)
	}
	guest := harness.GuestDir(repo)
	if err := harness.CheckGuestAssets(guest); err != nil {
		logf("warning: %v; the coco handlers need them", err)
	}
	ctrd, err := harness.Start(ctx, harness.Options{
		Repo: repo, Bins: bins, Root: dir, Handlers: harness.StandardHandlers(repo),
		Env: []string{"COCO_SHARE_DIR=" + guest}, Logf: logf,
	})
	if err != nil {
		return err
	}
	if err := writeExamples(dir); err != nil {
		ctrd.Stop(ctx)
		return err
	}
	pid := ctrd.PID()
	if err := ctrd.Detach(); err != nil {
		ctrd.Stop(ctx)
		return err
	}
	sock := ctrd.Address
	fmt.Printf(`containerd is running (pid %d), handlers: coco, coco-sandboxer, runc
  socket:  %[2]s
  log:     %[3]s
  images:  %[4]s, %[5]s (namespace k8s.io)

With crictl:
  export CONTAINER_RUNTIME_ENDPOINT=unix://%[2]s IMAGE_SERVICE_ENDPOINT=unix://%[2]s
  POD=$(crictl --timeout 60s runp --runtime coco %[6]s)   # a VM pod needs more than the default 2s
  CTR=$(crictl create $POD %[7]s %[6]s)
  crictl start $CTR
  crictl exec $CTR uname -r
  crictl logs $CTR
  crictl stopp $POD && crictl rmp $POD

With ctr:
  %[8]s --address %[2]s -n k8s.io run --rm --runtime io.containerd.coco.v2 %[4]s demo uname -r

Stop it (removes pods, containerd, mounts, bridge, %[9]s): make dev-containerd-stop
`, pid, sock, ctrd.LogPath, harness.BusyboxImage, harness.PauseImage,
		filepath.Join(dir, "pod.json"), filepath.Join(dir, "container.json"), bins.Ctr, dir)
	return nil
}

// writeExamples writes the pod/container JSON pair crictl takes.
func writeExamples(dir string) error {
	pod := map[string]any{
		"metadata":      map[string]any{"name": "dev-pod", "namespace": "default", "uid": "dev-pod-uid", "attempt": 0},
		"hostname":      "dev-pod",
		"log_directory": filepath.Join(dir, "logs", "dev-pod"),
		"linux":         map[string]any{},
	}
	ctr := map[string]any{
		"metadata": map[string]any{"name": "shell"},
		"image":    map[string]any{"image": harness.BusyboxImage},
		"command":  []string{"sh", "-c", "echo hello from $(uname -r); exec sleep 3600"},
		"log_path": "shell.log",
		"linux":    map[string]any{},
	}
	for name, v := range map[string]any{"pod.json": pod, "container.json": ctr} {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func stop(dir string) error {
	ctrd, err := harness.Attach(context.Background(), dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "dev-containerd: nothing running in %s\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	if err := ctrd.Stop(context.Background()); err != nil {
		return err
	}
	fmt.Printf("stopped; %s removed\n", dir)
	return nil
}
