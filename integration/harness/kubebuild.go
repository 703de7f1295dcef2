//go:build integration

package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// The Kubernetes node of the kubelet tests is built from these releases.
// They are not in our go.mod: kube-apiserver and kubelet are built in
// throwaway modules (like containerd), so our module's dependency set does
// not move. Every k8s.io staging module is replaced by the same release, as
// k8s.io/kubernetes itself can only be required that way.
const (
	KubeVersion    = "v1.37.2"
	KubeStagingVer = "v0.37.2"
	EtcdVersion    = "v3.7.3"
)

// KubeBinaries are the executables of one Kubernetes node.
type KubeBinaries struct {
	APIServer, ControllerManager, Kubelet, Etcd string
}

// kubeCommands are the k8s.io/kubernetes commands the tests run. kubectl is
// left out: client-go does what the tests need, and every minute of this
// build counts against CI's limit on a cold cache.
var kubeCommands = []string{"kube-apiserver", "kube-controller-manager", "kubelet"}

// KubeCacheDir is where BuildKube keeps the binaries, per version and Go.
func KubeCacheDir() string {
	cache := os.Getenv("COCO_CACHE_DIR")
	if cache == "" {
		cache = DefaultCacheDir
	}
	return filepath.Join(cache, fmt.Sprintf("kube-%s-etcd-%s-%s", KubeVersion, EtcdVersion, runtime.Version()))
}

func kubeBinaries(dir string) KubeBinaries {
	return KubeBinaries{
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Kubelet:           filepath.Join(dir, "kubelet"),
		Etcd:              filepath.Join(dir, "etcd"),
	}
}

func (b KubeBinaries) all() []string {
	return []string{b.APIServer, b.ControllerManager, b.Kubelet, b.Etcd}
}

// BuildKube returns the node's binaries, building them into the cache on
// first use: ~15 min of CPU on 2 cores (kube-apiserver alone ~8 min), so
// `make kube-node` does it before the tests and outside their timeout.
func BuildKube(ctx context.Context, repo string, logf Logf) (KubeBinaries, error) {
	dir := filepath.Join(KubeCacheDir(), "bin")
	b := kubeBinaries(dir)
	if allExist(b.all()...) {
		return b, nil
	}
	cache := filepath.Dir(KubeCacheDir())
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return b, fmt.Errorf("harness: cache dir %s: %w", cache, err)
	}
	unlock, err := lockFile(filepath.Join(cache, "kube.lock"))
	if err != nil {
		return b, err
	}
	defer unlock()
	if allExist(b.all()...) {
		return b, nil
	}
	logf("harness: building Kubernetes %s (%s) and etcd %s into %s (~15 min on 2 cores, once)",
		KubeVersion, strings.Join(kubeCommands, ", "), EtcdVersion, dir)
	tmp, err := os.MkdirTemp(cache, "kube-build-")
	if err != nil {
		return b, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "out")
	// etcd's module resolution is mostly waiting on the network, so it
	// runs beside the Kubernetes compile rather than after it.
	var wg sync.WaitGroup
	var kubeErr, etcdErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		start := time.Now()
		kubeErr = buildKubeCommands(ctx, repo, filepath.Join(tmp, "kubernetes"), out)
		logf("harness: Kubernetes commands built in %s", time.Since(start).Round(time.Second))
	}()
	go func() {
		defer wg.Done()
		start := time.Now()
		etcdErr = buildEtcd(ctx, repo, filepath.Join(tmp, "etcd"), out)
		logf("harness: etcd built in %s", time.Since(start).Round(time.Second))
	}()
	wg.Wait()
	if err := errors.Join(kubeErr, etcdErr); err != nil {
		return b, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return b, err
	}
	if err := os.Rename(out, dir); err != nil {
		return b, fmt.Errorf("harness: install Kubernetes binaries into cache: %w", err)
	}
	return b, nil
}

// buildKubeCommands builds kubeCommands from k8s.io/kubernetes in a module
// that requires it and replaces each staging module by its release (the
// list is read from k8s.io/kubernetes' own go.mod, whose replaces point into
// its staging/ tree and so do not apply to a module that requires it).
func buildKubeCommands(ctx context.Context, repo, dir, out string) error {
	staging, err := stagingModules(ctx, repo)
	if err != nil {
		return err
	}
	var gomod strings.Builder
	fmt.Fprintf(&gomod, "module coco.local/kube-build\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n",
		strings.TrimPrefix(runtime.Version(), "go"), KubeVersion)
	for _, m := range staging {
		fmt.Fprintf(&gomod, "\t%s => %s %s\n", m, m, KubeStagingVer)
	}
	gomod.WriteString(")\n")
	pkgs := make([]string, len(kubeCommands))
	for i, c := range kubeCommands {
		pkgs[i] = "k8s.io/kubernetes/cmd/" + c
	}
	// The version the binaries report (kubelet's node status, the API's
	// /version); unset, they say v0.0.0-master.
	ld := "-s -w"
	minor := strings.Split(strings.TrimPrefix(KubeVersion, "v"), ".")[1]
	for _, p := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		ld += fmt.Sprintf(" -X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean",
			p, KubeVersion, p, p, minor, p)
	}
	return goBuildIn(ctx, repo, dir, gomod.String(), nil, pkgs, out, []string{"-ldflags", ld})
}

// buildEtcd builds a small program embedding etcd's server (etcdMain), which
// is all the API server needs from etcd.
func buildEtcd(ctx context.Context, repo, dir, out string) error {
	gomod := fmt.Sprintf("module coco.local/etcd\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 %s\n",
		strings.TrimPrefix(runtime.Version(), "go"), EtcdVersion)
	files := map[string]string{"main.go": etcdMain}
	return goBuildIn(ctx, repo, dir, gomod, files, []string{"."}, filepath.Join(out, "etcd"), []string{"-ldflags", "-s -w"})
}

// goBuildIn writes a module (go.mod, files) into dir, resolves it and builds
// pkgs to out (a directory when it ends in "/" or there are several pkgs).
// Static and at the lowest priority: a developer's machine stays usable.
func goBuildIn(ctx context.Context, repo, dir, gomod string, files map[string]string, pkgs []string, out string, flags []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if len(files) == 0 {
		// go mod tidy keeps only what some file imports.
		imports := ""
		for _, p := range pkgs {
			imports += fmt.Sprintf("\t_ %q\n", p)
		}
		files = map[string]string{"tools.go": "//go:build tools\n\npackage tools\n\nimport (\n" + imports + ")\n"}
	}
	files["go.mod"] = gomod
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	// Our go.sum already vouches for many of the dependencies.
	if sum, err := os.ReadFile(filepath.Join(repo, "go.sum")); err == nil {
		if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
			return err
		}
	}
	env := []string{"GOWORK=off", "GOFLAGS=-mod=mod", "CGO_ENABLED=0"}
	if o, err := run(ctx, dir, env, "go", "mod", "tidy"); err != nil {
		return fmt.Errorf("harness: resolve %s: %w\n%s", dir, err, tail(o, 2000))
	}
	if len(pkgs) > 1 {
		out += "/"
	}
	args := append([]string{"-n", "19", "go", "build"}, flags...)
	args = append(append(args, "-o", out), pkgs...)
	if o, err := run(ctx, dir, env, "nice", args...); err != nil {
		return fmt.Errorf("harness: build %s: %w\n%s", strings.Join(pkgs, " "), err, tail(o, 3000))
	}
	return nil
}

// stagingModules lists the k8s.io modules k8s.io/kubernetes' go.mod
// replaces with its staging/ directories.
func stagingModules(ctx context.Context, repo string) ([]string, error) {
	o, err := run(ctx, repo, []string{"GOWORK=off", "GOFLAGS=-mod=mod"}, "go", "mod", "download", "-json", "k8s.io/kubernetes@"+KubeVersion)
	if err != nil {
		return nil, fmt.Errorf("harness: download k8s.io/kubernetes %s: %w\n%s", KubeVersion, err, tail(o, 2000))
	}
	var info struct{ GoMod string }
	if err := json.Unmarshal(o, &info); err != nil || info.GoMod == "" {
		return nil, fmt.Errorf("harness: go mod download k8s.io/kubernetes: no go.mod in %q", tail(o, 500))
	}
	f, err := os.Open(info.GoMod)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mods []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "\tk8s.io/api => ./staging/src/k8s.io/api"
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && fields[1] == "=>" && strings.HasPrefix(fields[2], "./staging/") {
			mods = append(mods, fields[0])
		}
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("harness: no staging replaces in %s", info.GoMod)
	}
	return mods, sc.Err()
}
