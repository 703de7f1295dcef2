//go:build integration

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// CritestVersion is the cri-tools release whose validation suite (critest)
// the tests run against each handler. Like the Kubernetes node, it is built
// in a throwaway module, so our go.mod does not move.
const CritestVersion = "v1.37.0"

// critestImports are the packages cmd/critest's test file imports: a
// package with only a _test.go file is invisible to go mod tidy in a
// dependency, so the throwaway module names what the test needs.
var critestImports = []string{
	"github.com/onsi/ginkgo/v2",
	"github.com/onsi/gomega",
	"sigs.k8s.io/cri-tools/pkg/benchmark",
	"sigs.k8s.io/cri-tools/pkg/common",
	"sigs.k8s.io/cri-tools/pkg/framework",
	"sigs.k8s.io/cri-tools/pkg/validate",
	"sigs.k8s.io/cri-tools/pkg/version",
}

// CritestPath is where BuildCritest keeps the binary, per version and Go.
func CritestPath() string {
	cache := os.Getenv("COCO_CACHE_DIR")
	if cache == "" {
		cache = DefaultCacheDir
	}
	return filepath.Join(cache, fmt.Sprintf("critest-%s-%s", CritestVersion, runtime.Version()), "critest")
}

// BuildCritest returns critest, building it into the cache on first use
// (`go test -c ./cmd/critest` of sigs.k8s.io/cri-tools; ~3 min on 2 busy
// cores), so `make critest` does it before the tests.
func BuildCritest(ctx context.Context, repo string, logf Logf) (string, error) {
	bin := CritestPath()
	if allExist(bin) {
		return bin, nil
	}
	cache := filepath.Dir(filepath.Dir(bin))
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return bin, fmt.Errorf("harness: cache dir %s: %w", cache, err)
	}
	unlock, err := lockFile(filepath.Join(cache, "critest.lock"))
	if err != nil {
		return bin, err
	}
	defer unlock()
	if allExist(bin) {
		return bin, nil
	}
	logf("harness: building critest %s into %s (~3 min on 2 cores, once)", CritestVersion, bin)
	start := time.Now()
	dir, err := os.MkdirTemp(cache, "critest-build-")
	if err != nil {
		return bin, err
	}
	defer os.RemoveAll(dir)
	imports := ""
	for _, p := range critestImports {
		imports += fmt.Sprintf("\t_ %q\n", p)
	}
	files := map[string]string{
		"go.mod": fmt.Sprintf("module coco.local/critest-build\n\ngo %s\n\nrequire sigs.k8s.io/cri-tools %s\n",
			strings.TrimPrefix(runtime.Version(), "go"), CritestVersion),
		"tools.go": "//go:build tools\n\npackage tools\n\nimport (\n" + imports + ")\n",
	}
	// Our go.sum already vouches for many of the dependencies.
	if sum, err := os.ReadFile(filepath.Join(repo, "go.sum")); err == nil {
		files["go.sum"] = string(sum)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return bin, err
		}
	}
	env := []string{"GOWORK=off", "GOFLAGS=-mod=mod", "CGO_ENABLED=0"}
	if o, err := run(ctx, dir, env, "go", "mod", "tidy"); err != nil {
		return bin, fmt.Errorf("harness: resolve cri-tools %s: %w\n%s", CritestVersion, err, tail(o, 2000))
	}
	out := filepath.Join(dir, "critest")
	if o, err := run(ctx, dir, env, "nice", "-n", "19", "go", "test", "-c", "-ldflags", "-s -w",
		"-o", out, "sigs.k8s.io/cri-tools/cmd/critest"); err != nil {
		return bin, fmt.Errorf("harness: build critest %s: %w\n%s", CritestVersion, err, tail(o, 3000))
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return bin, err
	}
	if err := os.Rename(out, bin); err != nil {
		return bin, fmt.Errorf("harness: install critest into cache: %w", err)
	}
	logf("harness: critest built in %s", time.Since(start).Round(time.Second))
	return bin, nil
}
