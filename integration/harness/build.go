//go:build integration

// Package harness starts a real containerd 2.x for the integration tests, the
// demo and `make dev-containerd`: it builds containerd, ctr, containerd's own
// runc shim and runc from the module versions pinned in go.mod (cached under
// /var/cache/coco), builds our shim, writes a containerd config registering the
// coco handlers next to the runc baseline, imports self-built test images and
// tears everything down again.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// DefaultCacheDir holds the peer binaries between runs; COCO_CACHE_DIR overrides it.
const DefaultCacheDir = "/var/cache/coco"

// Binaries are the executables a harness run uses.
type Binaries struct {
	Containerd string
	Ctr        string
	RuncShim   string // containerd-shim-runc-v2, the same-run baseline
	Runc       string
	Pause      string // static pause binary for the sandbox image
	// CocoShim is bin/containerd-shim-coco-v2, or "" when it did not build
	// (see CocoShimErr); the runc rows do not need it.
	CocoShim    string
	CocoShimErr error `json:"-"`
	// CocoSnapshotter is bin/coco-snapshotter (guest-pull handlers), or ""
	// when it did not build.
	CocoSnapshotter string
}

// Logf receives progress lines (t.Logf, log.Printf).
type Logf func(format string, args ...any)

// RepoRoot walks up from the working directory to the module root.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/coco-runtime/coco\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: not inside the github.com/coco-runtime/coco module")
		}
		dir = parent
	}
}

// BuildAll builds (or finds cached) every binary a run needs.
func BuildAll(ctx context.Context, repo string, logf Logf) (Binaries, error) {
	var b Binaries
	peers, err := BuildPeers(ctx, repo, logf)
	if err != nil {
		return b, err
	}
	b = peers
	if b.Pause, err = buildPause(ctx, repo); err != nil {
		return b, err
	}
	if out, err := run(ctx, repo, nil, "make", "--no-print-directory", "shim"); err != nil {
		b.CocoShimErr = fmt.Errorf("make shim: %w\n%s", err, tail(out, 2000))
	} else {
		b.CocoShim = filepath.Join(repo, "bin", "containerd-shim-coco-v2")
	}
	if out, err := run(ctx, repo, nil, "make", "--no-print-directory", "snapshotter"); err != nil {
		logf("harness: make snapshotter: %v\n%s", err, tail(out, 2000))
	} else {
		b.CocoSnapshotter = filepath.Join(repo, "bin", "coco-snapshotter")
	}
	return b, nil
}

// BuildPeers returns containerd, ctr, containerd-shim-runc-v2 and runc built
// from the versions in go.mod, building them into the cache on first use.
// containerd is built in a throwaway module that requires only containerd, so
// it gets exactly the dependency set containerd was released with (our own
// module may carry newer k8s APIs containerd's CRI does not compile against).
func BuildPeers(ctx context.Context, repo string, logf Logf) (Binaries, error) {
	ctrdVer, err := moduleVersion(ctx, repo, "github.com/containerd/containerd/v2")
	if err != nil {
		return Binaries{}, err
	}
	runcVer, err := moduleVersion(ctx, repo, "github.com/opencontainers/runc")
	if err != nil {
		return Binaries{}, err
	}
	cache := os.Getenv("COCO_CACHE_DIR")
	if cache == "" {
		cache = DefaultCacheDir
	}
	// "static-shim": the runc shim is built as containerd's release builds
	// it (below); older caches held a cgo, dynamically linked one.
	dir := filepath.Join(cache, fmt.Sprintf("peers-containerd-%s-runc-%s-%s-static-shim", ctrdVer, runcVer, runtime.Version()), "bin")
	b := Binaries{
		Containerd: filepath.Join(dir, "containerd"),
		Ctr:        filepath.Join(dir, "ctr"),
		RuncShim:   filepath.Join(dir, "containerd-shim-runc-v2"),
		Runc:       filepath.Join(dir, "runc"),
	}
	if allExist(b.Containerd, b.Ctr, b.RuncShim, b.Runc) {
		return b, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return b, fmt.Errorf("harness: cache dir %s: %w", cache, err)
	}
	// Two test binaries may start at once; one builds, the other waits.
	unlock, err := lockFile(filepath.Join(cache, "peers.lock"))
	if err != nil {
		return b, err
	}
	defer unlock()
	if allExist(b.Containerd, b.Ctr, b.RuncShim, b.Runc) {
		return b, nil
	}
	logf("harness: building containerd %s and runc %s into %s (~3 min on 2 cores, once)", ctrdVer, runcVer, dir)
	tmp, err := os.MkdirTemp(cache, "peers-build-")
	if err != nil {
		return b, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "out")
	if err := buildInModule(ctx, repo, filepath.Join(tmp, "containerd"), out,
		"github.com/containerd/containerd/v2", ctrdVer, nil, []string{"-tags", "no_btrfs"},
		"cmd/containerd", "cmd/ctr"); err != nil {
		return b, err
	}
	// The runc shim as containerd's releases ship it (its Makefile's
	// SHIM_CGO_ENABLED=0): static, so the baseline's memory and start-up
	// are what users run, not a dynamically linked cgo build's.
	if err := buildInModule(ctx, repo, filepath.Join(tmp, "containerd-shim"), out,
		"github.com/containerd/containerd/v2", ctrdVer, []string{"CGO_ENABLED=0"}, []string{"-tags", "no_btrfs"},
		"cmd/containerd-shim-runc-v2"); err != nil {
		return b, err
	}
	// Static with seccomp, as in the guest; libseccomp-dev comes from scripts/install-deps.sh.
	if err := buildInModule(ctx, repo, filepath.Join(tmp, "runc"), out,
		"github.com/opencontainers/runc", runcVer, []string{"CGO_ENABLED=1"},
		[]string{"-tags", "seccomp netgo osusergo", "-ldflags", "-extldflags -static -s -w"}, ""); err != nil {
		return b, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return b, err
	}
	if err := os.Rename(out, dir); err != nil {
		return b, fmt.Errorf("harness: install peers into cache: %w", err)
	}
	return b, nil
}

// buildInModule builds pkgs (paths relative to module, "" = its root) of
// module@version into out/ from a throwaway module that requires only that
// module, so the build gets the dependency set the module was released with:
// ours carries newer k8s and runtime-spec APIs that containerd 2.3's CRI and
// runc 1.3 do not compile against.
func buildInModule(ctx context.Context, repo, dir, out, module, version string, env, flags []string, pkgs ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	imports := ""
	targets := make([]string, len(pkgs))
	for i, p := range pkgs {
		targets[i] = strings.TrimSuffix(module+"/"+p, "/")
		imports += fmt.Sprintf("\t_ %q\n", targets[i])
	}
	gomod := fmt.Sprintf("module coco.local/peer-build\n\ngo %s\n\nrequire %s %s\n",
		strings.TrimPrefix(runtime.Version(), "go"), module, version)
	tools := "//go:build tools\n\npackage tools\n\nimport (\n" + imports + ")\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tools.go"), []byte(tools), 0o644); err != nil {
		return err
	}
	// Our go.sum already vouches for most of the dependencies.
	if sum, err := os.ReadFile(filepath.Join(repo, "go.sum")); err == nil {
		if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
			return err
		}
	}
	env = append([]string{"GOWORK=off", "GOFLAGS=-mod=mod"}, env...)
	if o, err := run(ctx, dir, env, "go", "mod", "tidy"); err != nil {
		return fmt.Errorf("harness: resolve %s %s: %w\n%s", module, version, err, tail(o, 2000))
	}
	args := append([]string{"build"}, flags...)
	args = append(append(args, "-o", out+"/"), targets...)
	if o, err := run(ctx, dir, env, "go", args...); err != nil {
		return fmt.Errorf("harness: build %s %s: %w\n%s", module, version, err, tail(o, 2000))
	}
	return nil
}

// buildPause builds the pause binary; it is small enough to build every run.
func buildPause(ctx context.Context, repo string) (string, error) {
	out := filepath.Join(repo, "build", "integration", "pause")
	o, err := run(ctx, repo, []string{"CGO_ENABLED=0"}, "go", "build", "-tags", "integration",
		"-ldflags", "-s -w", "-o", out, "./integration/cmd/pause")
	if err != nil {
		return "", fmt.Errorf("harness: build pause: %w\n%s", err, o)
	}
	return out, nil
}

func moduleVersion(ctx context.Context, repo, module string) (string, error) {
	out, err := run(ctx, repo, nil, "go", "list", "-m", "-f", "{{.Version}}", module)
	if err != nil {
		return "", fmt.Errorf("harness: version of %s from go.mod: %w\n%s", module, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func run(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("harness: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

func allExist(paths ...string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
