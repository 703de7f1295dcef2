//go:build integration

package integration

// critest, the CRI validation suite of cri-tools (built from its module by
// `make critest`), run against the runc baseline and the coco handler in
// the same run, on the shared containerd. Its images are made here from
// Debian's busybox and served from a registry on 127.0.0.1 that
// containerd's certs.d sends registry.k8s.io, gcr.io and k8s.gcr.io to.
//
// The rule: every spec that passes on runc passes on coco, except those a
// VM cannot honour (vmExempt, also in the README); no spec is skipped on
// coco that runs on runc. By default a subset that fits CI's budget runs
// (critestQuick, ~5 min); COCO_CRITEST=full runs the whole suite (~23 min
// on 2 cores), and COCO_CRITEST=0 turns the test off.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
)

// vmExempt are the specs (regular expressions on the full spec text) that
// may pass on runc and fail on coco, with why a VM runtime cannot honour
// them. Kept in step with the README's critest section.
var vmExempt = map[string]string{
	`HostNetwork is true|portforward in host network`: "the pod's network stack is the guest kernel's: the host's interfaces and ports are not in the VM",
	`HostIpc is true`:        "the host's IPC namespace (SysV shared memory, message queues) belongs to the host kernel, not the guest's",
	`should support HostPID`: "the host's processes run on the host kernel; the guest cannot see or signal them",
	`Mount Propagation .*propagation from host to container`: "a mount made on the host after the container started does not reach the guest's mount table",
	// Its check is that a directory the container makes in its hostPath
	// volume shows on the host: the guest holds a copy of the directory.
	`Mount Propagation .*'rprivate' should not support propagation`: "the container's writes to a hostPath volume stay in the guest (no filesystem shared with the host)",
	// Both mount a tmpfs inside the hostPath on the host and look at it
	// from the container.
	`Container Mount Readonly .*should support (non-)?recursive readonly mounts`: "a host mount inside a hostPath volume is not in the guest, which has a copy of the directory's files",
}

// critestAlwaysSkip are specs neither handler can run here: NRI (disabled
// in the harness's containerd; they skip themselves without a socket) and
// the image with a digest, which pins the upstream image's manifest that no
// image built here can match (and nothing here reaches gcr.io).
const critestAlwaysSkip = `NRI |public image with digest`

// critestQuick is the default subset, for CI's budget (each coco spec boots
// a VM: ~10 s under TCG): pod and container lifecycle, exec, logs, a
// hostPath volume, streaming, the image service, runtime info,
// idempotence, some security contexts, the recursive read-only mount
// checks and a user namespace spec. COCO_CRITEST=full runs all.
const critestQuick = `PodSandbox runtime should support basic|` +
	`on container runtime should support (creating|starting|stopping|removing running) container|execSync|` +
	`starting container with log|starting container with volume \[|exec with tty=false|support attach|` +
	`Image Manager|Runtime info|Idempotence|` +
	`Security Context bucket runtime should support (RunAsUser|ReadOnlyRootfs is true|Privileged is true|ReadonlyPaths)|` +
	`should reject a recursive readonly|NamespaceMode_NODE`

// handlerCritest is the coco-dev class with [volumes] host_dirs = "copy":
// critest's hostPath specs expect the directory's content in the
// container, which the default ("empty" without a TEE) does not give.
const handlerCritest = "coco-critest"

func critestHandlers(e *env) ([]harness.Handler, error) {
	path := filepath.Join(e.failDir, handlerCritest+".toml")
	coco, err := os.ReadFile(harness.CocoDevConfig(e.repo))
	if err != nil {
		return nil, err
	}
	body := string(coco) + "\n[volumes]\nhost_dirs = \"copy\"\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		return nil, err
	}
	// No options table: containerd's client cannot start a container of a
	// user namespace pod on a handler with one (it reads the handler's
	// runtimeoptions as runc's to set the stdio owner, containerd issue
	// 11091), so the shim finds its configuration in $COCO_CONFIG.
	wrapper := filepath.Join(e.failDir, "shim-"+handlerCritest)
	script := fmt.Sprintf("#!/bin/sh\n# The shim with the critest configuration.\nCOCO_CONFIG=%q exec %q \"$@\"\n", path, e.bins.CocoShim)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		return nil, err
	}
	h := harness.CocoHandler(handlerCritest, "", "")
	h.RuntimePath = wrapper
	return []harness.Handler{h}, nil
}

// specResult is the part of a ginkgo JSON report entry the test reads.
type specResult struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	State                   string
	Failure                 struct {
		Message string
	}
}

func (s specResult) name() string {
	return strings.Join(append(append([]string{}, s.ContainerHierarchyTexts...), s.LeafNodeText), " ")
}

func TestCritest(t *testing.T) {
	mode := os.Getenv("COCO_CRITEST")
	if mode == "0" {
		t.Skip("critest turned off with COCO_CRITEST=0")
	}
	requireGuest(t)
	ctx := testCtx(t, 2*time.Hour)
	bin, err := harness.BuildCritest(ctx, shared.repo, t.Logf)
	if err != nil {
		t.Fatalf("build critest (`make critest`): %v", err)
	}
	reg, err := harness.ServeCritestRegistry(ctx, shared.repo, shared.ctrd.Root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	focus := critestQuick
	if mode == "full" {
		focus = ""
	}
	if f := os.Getenv("COCO_CRITEST_FOCUS"); f != "" {
		focus = f
	}
	results := map[string]map[string]specResult{}
	for _, h := range []string{"runc", handlerCritest} {
		start := time.Now()
		rs, err := runCritest(ctx, t, bin, h, focus)
		if err != nil {
			t.Fatalf("critest on %s: %v", h, err)
		}
		results[h] = rs
		t.Logf("critest on %s: %s in %s", h, summarize(rs), time.Since(start).Round(time.Second))
	}
	compareCritest(t, results["runc"], results[handlerCritest])
}

// runCritest runs critest against handler h and returns its specs by name.
func runCritest(ctx context.Context, t *testing.T, bin, h, focus string) (map[string]specResult, error) {
	dir := filepath.Join(shared.repo, "build", "integration", "critest-"+h)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	report := filepath.Join(dir, "report.json")
	ep := "unix://" + shared.ctrd.Address
	args := []string{
		"-runtime-endpoint", ep, "-image-endpoint", ep, "-runtime-handler", h,
		"-ginkgo.json-report", report, "-ginkgo.no-color", "-ginkgo.timeout", "2h",
		"-ginkgo.skip", critestAlwaysSkip,
	}
	if focus != "" {
		args = append(args, "-ginkgo.focus", focus)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := os.Create(filepath.Join(dir, "critest.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// critest exits non-zero when a spec fails; the report says which.
	runErr := cmd.Run()
	data, err := os.ReadFile(report)
	if err != nil {
		return nil, fmt.Errorf("no report (%v; log in %s): %w", runErr, out.Name(), err)
	}
	var reports []struct{ SpecReports []specResult }
	if err := json.Unmarshal(data, &reports); err != nil {
		return nil, fmt.Errorf("report %s: %w", report, err)
	}
	specs := map[string]specResult{}
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if s.LeafNodeText == "" { // suite nodes (BeforeSuite ...)
				continue
			}
			specs[s.name()] = s
		}
	}
	return specs, nil
}

func summarize(rs map[string]specResult) string {
	n := map[string]int{}
	for _, s := range rs {
		n[s.State]++
	}
	return fmt.Sprintf("%d passed, %d failed, %d skipped (of %d in the report)",
		n["passed"], n["failed"]+n["panicked"]+n["timedout"]+n["interrupted"]+n["aborted"], n["skipped"]+n["pending"], len(rs))
}

// compareCritest fails for each spec that ran and passed on runc but not on
// coco, unless vmExempt names it; it logs the exempt ones and those failing
// on both.
func compareCritest(t *testing.T, runc, coco map[string]specResult) {
	names := make([]string, 0, len(runc))
	for n := range runc {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r, c := runc[n], coco[n]
		switch {
		case r.State != "passed":
			if r.State != "skipped" {
				t.Logf("fails on runc too (%s): %s: %s", r.State, n, firstLine(r.Failure.Message))
			}
		case c.State == "passed":
		case exemptReason(n) != "":
			t.Logf("exempt on coco (%s): %s: %s", c.State, n, exemptReason(n))
		case c.State == "skipped":
			t.Errorf("skipped on coco, passed on runc: %s", n)
		default:
			t.Errorf("fails on coco (%s), passes on runc: %s: %s", c.State, n, firstLine(c.Failure.Message))
		}
	}
}

func exemptReason(spec string) string {
	for re, why := range vmExempt {
		if regexp.MustCompile(re).MatchString(spec) {
			return why
		}
	}
	return ""
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
