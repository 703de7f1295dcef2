//go:build integration

package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// KubeOptions configure one Kubernetes node on a running containerd.
type KubeOptions struct {
	Bins       KubeBinaries
	Containerd *Containerd
	// RuntimeClasses are created, each named after its containerd handler.
	RuntimeClasses []string
	Logf           Logf
}

// Kube is a one-node Kubernetes: etcd, kube-apiserver and
// kube-controller-manager on 127.0.0.1, and a kubelet whose runtime is the
// harness's containerd (its handlers, CNI network and images). There is no
// scheduler (pods name their node) and no kube-proxy or DNS.
type Kube struct {
	Root       string
	NodeName   string
	NodeIP     string
	Server     string // https://127.0.0.1:<port>
	Kubeconfig string // system:masters
	Config     *rest.Config
	Client     kubernetes.Interface
	// KubeletRoot is the kubelet's --root-dir (pods/<uid>/volumes/...).
	KubeletRoot string

	cgroupRoot string
	sysctls    map[string]string
	ctrd       *Containerd
	procs      []*kubeProc // in start order
	logf       Logf
}

// StartKube starts the node and waits until it is Ready with its
// RuntimeClasses made. On error everything it started is stopped again.
func StartKube(ctx context.Context, o KubeOptions) (k *Kube, err error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	cleanStaleKube(o.Logf)
	root, err := os.MkdirTemp("", kubeStatePrefix)
	if err != nil {
		return nil, err
	}
	k = &Kube{
		Root:        root,
		NodeName:    "coco-it-" + strings.ToLower(randHex(3)),
		KubeletRoot: filepath.Join(root, "kubelet"),
		cgroupRoot:  "/" + filepath.Base(root),
		ctrd:        o.Containerd,
		logf:        o.Logf,
	}
	defer func() {
		if err != nil {
			k.Stop(context.Background())
			k = nil
		}
	}()
	// Before anything can leave state behind, so that a later run can clean
	// up after a killed one.
	owner := fmt.Sprintf("%d %s\n", os.Getpid(), k.cgroupRoot)
	if err := os.WriteFile(filepath.Join(root, ownerFile), []byte(owner), 0o644); err != nil {
		return k, err
	}
	k.sysctls = readSysctls()
	if err := saveSysctls(root, k.sysctls); err != nil {
		return k, err
	}
	if k.NodeIP, err = nodeIP(); err != nil {
		return k, err
	}
	logs := filepath.Join(root, "logs")
	for _, d := range []string{logs, k.KubeletRoot, filepath.Join(root, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return k, err
		}
	}
	pki, err := newKubePKI(filepath.Join(root, "pki"))
	if err != nil {
		return k, err
	}
	etcdURL, err := k.startEtcd(ctx, o.Bins.Etcd, logs)
	if err != nil {
		return k, err
	}
	if err := k.startAPIServer(ctx, o.Bins.APIServer, logs, pki, etcdURL); err != nil {
		return k, err
	}
	if err := k.startControllerManager(o.Bins.ControllerManager, logs, pki); err != nil {
		return k, err
	}
	if err := k.createRuntimeClasses(ctx, o.RuntimeClasses); err != nil {
		return k, err
	}
	if err := k.startKubelet(ctx, o.Bins.Kubelet, logs, pki); err != nil {
		return k, err
	}
	return k, nil
}

func (k *Kube) startEtcd(ctx context.Context, bin, logs string) (string, error) {
	cport, err := freePort("127.0.0.1")
	if err != nil {
		return "", err
	}
	pport, err := freePort("127.0.0.1")
	if err != nil {
		return "", err
	}
	url := "http://127.0.0.1:" + strconv.Itoa(cport)
	p, err := startKubeProc("etcd", logs, bin, "-data-dir", filepath.Join(k.Root, "etcd"),
		"-listen-client-url", url, "-listen-peer-url", "http://127.0.0.1:"+strconv.Itoa(pport))
	if err != nil {
		return "", err
	}
	k.procs = append(k.procs, p)
	err = k.waitFor(ctx, p, time.Minute, func() error {
		resp, err := http.Get(url + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
	return url, err
}

// waitFor polls check until it succeeds, p exits or limit passes.
func (k *Kube) waitFor(ctx context.Context, p *kubeProc, limit time.Duration, check func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if perr := p.exitedErr(); perr != nil {
			return perr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("harness: %s not ready within %s: %v; log tail:\n%s", p.name, limit, err, p.logTail(4000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Stop deletes every pod through the API (so the kubelet stops them the
// normal way and the shims their VMs), stops the components, removes the
// kubelet's sandboxes still in containerd, and then what the kubelet made
// on the host: mounts under its root, its cgroups, the kernel settings it
// changed, and the instance directory.
func (k *Kube) Stop(ctx context.Context) error {
	var errs []error
	if k.Client != nil && k.kubeletRunning() {
		if err := k.deleteAllPods(ctx, 2*time.Minute); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(k.procs) - 1; i >= 0; i-- {
		k.procs[i].stop(20 * time.Second)
	}
	if k.ctrd != nil && k.ctrd.CRI != nil {
		if err := k.removeKubeletSandboxes(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range processesMentioning(k.Root) {
		errs = append(errs, fmt.Errorf("harness: stopped leftover process %d: %s", p, cmdline(p)))
		killAndWait(p)
	}
	if err := unmountUnder(k.Root); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(k.cgroupRoot); err != nil {
		errs = append(errs, err)
	}
	if err := restoreSysctls(k.sysctls); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(k.Root); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// KeepLogs copies the components' logs to dir as kube-<name>.log.
func (k *Kube) KeepLogs(dir string) {
	for _, p := range k.procs {
		if b, err := os.ReadFile(p.log); err == nil {
			os.WriteFile(filepath.Join(dir, "kube-"+p.name+".log"), b, 0o644)
		}
	}
}

// LogTail is the end of one component's log ("kubelet", "kube-apiserver", ...).
func (k *Kube) LogTail(name string, n int) string {
	for _, p := range k.procs {
		if p.name == name {
			return p.logTail(n)
		}
	}
	return ""
}

func (k *Kube) kubeletRunning() bool {
	for _, p := range k.procs {
		if p.name == "kubelet" {
			return p.exitedErr() == nil
		}
	}
	return false
}
