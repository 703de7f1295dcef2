//go:build integration

// Package integration drives a real containerd 2.x, built from the version in
// go.mod, through CRI and ctr. Every scenario is table-driven over runtime
// handlers: containerd's own runc shim (the same-run baseline) and ours.
//
// The coco rows need the guest assets (make guest-assets; make test builds
// them) and skip with the reason otherwise; COCO_E2E=0 turns them off.
// Scenarios the shim does not pass yet go in pending and run only with
// COCO_E2E=all.
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
)

// env is what every test shares: one containerd for the whole run, because
// starting one costs seconds and the scenarios clean up after themselves (and
// check that they did).
type env struct {
	repo     string
	ctrd     *harness.Containerd
	bins     harness.Binaries
	guestDir string
	// failDir holds the broken configs of the failure scenarios.
	failDir string
	// cocoReason says why the coco rows are skipped ("" = they run).
	cocoReason string
}

var shared *env // set once by TestMain, read-only afterwards

// handlerCase is one row of the handler tables.
type handlerCase struct {
	name string
	coco bool
}

var handlerRows = []handlerCase{
	{name: "runc"},
	{name: "coco", coco: true},
	{name: "coco-sandboxer", coco: true},
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx := context.Background()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration: needs root (containerd, mounts, CNI); skipping")
		return 0
	}
	repo, err := harness.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	harness.CleanStale(ctx, logf)
	bins, err := harness.BuildAll(ctx, repo, logf)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	e := &env{repo: repo, bins: bins, guestDir: harness.GuestDir(repo)}
	e.cocoReason = cocoSkipReason(e)
	if e.cocoReason != "" {
		logf("integration: coco rows skipped: %s", e.cocoReason)
	}
	handlers := harness.StandardHandlers(repo)
	// The broken configs live inside containerd's root, so teardown (or
	// the stale-instance cleanup of a later run) removes them with it.
	root, err := os.MkdirTemp("", "coco-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	e.failDir = filepath.Join(root, "fail")
	if err := os.Mkdir(e.failDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	failing, err := failureHandlers(e)
	if err != nil {
		os.RemoveAll(root)
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	handlers = append(handlers, failing...)
	reliability, err := reliabilityHandlers(e)
	if err != nil {
		os.RemoveAll(root)
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	handlers = append(handlers, reliability...)
	kube, err := kubeHandlers(e)
	if err != nil {
		os.RemoveAll(root)
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	handlers = append(handlers, kube...)
	crit, err := critestHandlers(e)
	if err != nil {
		os.RemoveAll(root)
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	handlers = append(handlers, crit...)
	ctrd, err := harness.Start(ctx, harness.Options{
		Repo:     repo,
		Bins:     bins,
		Handlers: handlers,
		Root:     root,
		Env:      []string{"COCO_SHARE_DIR=" + e.guestDir},
		Logf:     logf,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	e.ctrd = ctrd
	shared = e
	code := m.Run()
	// The kubelet's pods go before containerd does (kubenode_test.go).
	if err := stopKubeNode(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: Kubernetes node teardown: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	// containerd's log carries the shims' logs too; keep it for post-mortems.
	keep := filepath.Join(repo, "build", "integration", "containerd.log")
	if b, err := os.ReadFile(ctrd.LogPath); err == nil && os.WriteFile(keep, b, 0o644) == nil {
		logf("integration: containerd log kept at %s", keep)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := ctrd.Stop(stopCtx); err != nil {
		fmt.Fprintf(os.Stderr, "integration: teardown: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// cocoSkipReason says why the coco rows do not run: COCO_E2E=0 turns them
// off (e.g. for a quick run of the runc baseline), "all" adds the pending
// ones; they also need our shim to build.
func cocoSkipReason(e *env) string {
	if os.Getenv("COCO_E2E") == "0" {
		return "coco rows turned off with COCO_E2E=0"
	}
	if e.bins.CocoShimErr != nil {
		return fmt.Sprintf("our shim did not build: %v", e.bins.CocoShimErr)
	}
	return ""
}

// pending are coco scenarios known to fail on the current shim, keyed by test
// or subtest name, with what is missing. They run only with COCO_E2E=all;
// delete an entry once it passes. Empty: every scenario has passed.
var pending = map[string]string{}

// skipPending skips a pending scenario unless COCO_E2E=all.
func skipPending(t testing.TB, name string) {
	t.Helper()
	if why, ok := pending[name]; ok && os.Getenv("COCO_E2E") != "all" {
		t.Skipf("pending (COCO_E2E=all runs it): %s", why)
	}
}

// requireGuest skips a coco test that boots the real guest when the guest
// assets are missing (the failure scenarios need only the shim).
func requireGuest(t *testing.T) {
	t.Helper()
	requireCoco(t)
	if err := harness.CheckGuestAssets(shared.guestDir); err != nil {
		t.Skip(err.Error())
	}
}

// forEachHandler runs fn as a subtest per handler row, skipping the coco rows
// with the reason when they are gated.
func forEachHandler(t *testing.T, fn func(t *testing.T, h handlerCase)) {
	for _, h := range handlerRows {
		t.Run(h.name, func(t *testing.T) {
			if h.coco {
				requireGuest(t)
			}
			fn(t, h)
		})
	}
}

func requireCoco(t *testing.T) {
	t.Helper()
	if shared.cocoReason != "" {
		t.Skip(shared.cocoReason)
	}
	skipPending(t, t.Name())
	if i := strings.LastIndex(t.Name(), "/"); i >= 0 {
		skipPending(t, t.Name()[i+1:])
	}
	if i := strings.Index(t.Name(), "/"); i >= 0 {
		skipPending(t, t.Name()[:i])
	}
}

// guestKernelRelease is build/guest/kernel.release.
func guestKernelRelease(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(shared.guestDir, "kernel.release"))
	if err != nil {
		t.Fatalf("guest kernel release: %v (run `make guest-assets`)", err)
	}
	return strings.TrimSpace(string(b))
}

func hostKernelRelease(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// testCtx is a context bounded by the test's deadline minus a margin for cleanup.
func testCtx(t *testing.T, limit time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	return ctx
}

// assertNoLeftovers fails the test with everything ids left behind.
func assertNoLeftovers(t *testing.T, ids ...string) {
	t.Helper()
	// Shims exit asynchronously after RemovePodSandbox returns; give them a moment.
	var left []string
	for i := 0; i < 50; i++ {
		if left = shared.ctrd.Leftovers(ids...); len(left) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("left behind after removal:\n  %s", strings.Join(left, "\n  "))
}
