//go:build integration

// Command demo (`make demo`) runs one pod through a real containerd's CRI
// under the coco handler on the embedded default config, has its container
// print what it sees of its machine, prints that next to the host's view and
// tears everything down again.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
)

// probe prints one "key: value" line per fact; the host side runs the same
// questions through its own files.
const probe = `echo "kernel release: $(uname -r)"
echo "/proc/cmdline: $(cat /proc/cmdline)"
echo "hostname: $(hostname)"
echo "CPU model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"`

func main() {
	handler := flag.String("handler", "coco", "runtime handler: coco (our shim, embedded default config) or runc (containerd's own, for comparison)")
	flag.Parse()
	if err := run(*handler); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(handler string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...) }
	repo, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	guest := harness.GuestDir(repo)
	h := harness.RuncHandler()
	if handler != "runc" {
		if err := harness.CheckGuestAssets(guest); err != nil {
			return err
		}
		// No ConfigPath: the shim's embedded default (coco-dev); the
		// sandbox API, as the README configures it.
		h = harness.CocoHandler(handler, "", "shim")
	}
	logf("building containerd (cached after the first run), the shim and the pause image")
	bins, err := harness.BuildAll(ctx, repo, logf)
	if err != nil {
		return err
	}
	if handler != "runc" && bins.CocoShimErr != nil {
		return bins.CocoShimErr
	}
	logf("starting containerd")
	ctrd, err := harness.Start(ctx, harness.Options{
		Repo: repo, Bins: bins, Handlers: []harness.Handler{h},
		Env: []string{"COCO_SHARE_DIR=" + guest}, Logf: logf,
	})
	if err != nil {
		return err
	}
	defer func() {
		logf("tearing down")
		if err := ctrd.Stop(context.Background()); err != nil {
			logf("teardown: %v", err)
		}
	}()
	logDir := filepath.Join(ctrd.Root, "logs")
	cfg := harness.PodConfig(harness.PodOptions{Name: "coco-demo", LogDir: logDir})
	logf("RunPodSandbox (handler %s)", handler)
	start := time.Now()
	pod, err := ctrd.CRI.RunPod(ctx, handler, cfg)
	if err != nil {
		return fmt.Errorf("RunPodSandbox: %w\ncontainerd log tail:\n%s", err, ctrd.LogTail(2000))
	}
	boot := time.Since(start)
	start = time.Now()
	id, err := ctrd.CRI.StartContainer(ctx, pod, harness.ContainerConfig("probe", "probe.log", "sh", "-c", probe))
	if err != nil {
		return err
	}
	if _, err := ctrd.CRI.WaitExited(ctx, id, 2*time.Minute); err != nil {
		return err
	}
	run := time.Since(start)
	data, err := os.ReadFile(filepath.Join(logDir, "probe.log"))
	if err != nil {
		return err
	}
	container := parseFacts(harness.ParseCRILog(data))
	if err := ctrd.CRI.RemovePod(ctx, pod.ID); err != nil {
		return err
	}
	host := hostFacts()
	// One block per fact: a kernel command line is too long for columns.
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 1, ' ', 0)
	for _, k := range []string{"kernel release", "/proc/cmdline", "hostname", "CPU model"} {
		fmt.Fprintf(w, "\n%s\n  container (%s):\t%s\n  host:\t%s\n", k, handler, container[k], host[k])
	}
	w.Flush()
	fmt.Printf("\nRunPodSandbox %.2fs, container create+start+run %.2fs\n", boot.Seconds(), run.Seconds())
	if handler != "runc" && container["kernel release"] == host["kernel release"] {
		return fmt.Errorf("the container reports the host's kernel: it did not run in a VM")
	}
	return nil
}

func parseFacts(text string) map[string]string {
	facts := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
			facts[k] = v
		}
	}
	return facts
}

func hostFacts() map[string]string {
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	cpu := ""
	for _, line := range strings.Split(read("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			cpu = strings.TrimSpace(v)
			break
		}
	}
	name, _ := os.Hostname()
	return map[string]string{
		"kernel release": read("/proc/sys/kernel/osrelease"),
		"/proc/cmdline":  read("/proc/cmdline"),
		"hostname":       name,
		"CPU model":      cpu,
	}
}
