//go:build integration

package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// serviceCIDR is the cluster's service range; nothing routes it (there is
// no kube-proxy), but the API server needs one for the kubernetes service
// whose variables every container gets.
const serviceCIDR = "10.96.0.0/24"

func (k *Kube) startAPIServer(ctx context.Context, bin, logs string, pki *kubePKI, etcdURL string) error {
	port, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	k.Server = "https://127.0.0.1:" + strconv.Itoa(port)
	serving, servingKey, err := pki.issue("apiserver", "kube-apiserver", nil, []string{
		"127.0.0.1", k.NodeIP, "10.96.0.1", "localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return err
	}
	// The API server's identity at the kubelet (logs, exec): the kubelet
	// trusts certificates of our CA and authorizes everything it
	// authenticates.
	kc, kcKey, err := pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil)
	if err != nil {
		return err
	}
	admin, adminKey, err := pki.issue("admin", "coco-it-admin", []string{"system:masters"}, nil)
	if err != nil {
		return err
	}
	if k.Kubeconfig, err = pki.kubeconfig("admin", k.Server, admin, adminKey); err != nil {
		return err
	}
	saPub, saKey, err := pki.serviceAccountKey()
	if err != nil {
		return err
	}
	p, err := startKubeProc("kube-apiserver", logs, bin,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		// The kubernetes service's endpoint; a loopback address is refused.
		"--advertise-address="+k.NodeIP,
		"--tls-cert-file="+serving, "--tls-private-key-file="+servingKey,
		"--client-ca-file="+pki.CAFile(),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range="+serviceCIDR,
		// As a real cluster: the kubelet may read only its own pods'
		// secrets and ConfigMaps.
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate="+kc, "--kubelet-client-key="+kcKey,
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	k.procs = append(k.procs, p)
	k.Config = &rest.Config{
		Host:            k.Server,
		TLSClientConfig: rest.TLSClientConfig{CAFile: pki.CAFile(), CertFile: admin, KeyFile: adminKey},
		QPS:             50,
		Burst:           100,
		Timeout:         time.Minute,
	}
	cs, err := kubernetes.NewForConfig(k.Config)
	if err != nil {
		return err
	}
	k.Client = cs
	// A cold API server on busy cores takes tens of seconds (it installs
	// its bootstrap roles and priority levels before /readyz says ok).
	return k.waitFor(ctx, p, 3*time.Minute, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(cctx)
		return err
	})
}

func (k *Kube) startControllerManager(bin, logs string, pki *kubePKI) error {
	p, err := startKubeProc("kube-controller-manager", logs, bin,
		"--kubeconfig="+k.Kubeconfig,
		"--authentication-kubeconfig="+k.Kubeconfig,
		"--authorization-kubeconfig="+k.Kubeconfig,
		// Tokens and the kube-root-ca.crt ConfigMap every
		// kube-api-access volume projects.
		"--service-account-private-key-file="+filepath.Join(pki.dir, "sa.key"),
		"--root-ca-file="+pki.CAFile(),
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--v=1",
	)
	if err != nil {
		return err
	}
	k.procs = append(k.procs, p)
	return nil
}

func (k *Kube) startKubelet(ctx context.Context, bin, logs string, pki *kubePKI) error {
	cert, key, err := pki.issue("kubelet", "system:node:"+k.NodeName, []string{"system:nodes"}, nil)
	if err != nil {
		return err
	}
	kubeconfig, err := pki.kubeconfig("kubelet", k.Server, cert, key)
	if err != nil {
		return err
	}
	port, err := freePort(k.NodeIP)
	if err != nil {
		return err
	}
	// The kubelet refuses a cgroupRoot that does not exist; its own root
	// keeps its pods' cgroups apart from any other kubelet's and makes
	// teardown one recursive removal.
	if err := makeCgroups(k.cgroupRoot); err != nil {
		return err
	}
	config := filepath.Join(k.Root, "kubelet.yaml")
	text := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %q
port: %d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: %q
# containerd's runc shim uses cgroupfs (SystemdCgroup is off) and these
# machines have no systemd; cgroup v1 is what they have.
cgroupDriver: cgroupfs
cgroupRoot: %q
failCgroupV1: false
failSwapOn: false
podLogsDir: %q
# ConfigMap and Secret updates reach volumes within a sync period.
syncFrequency: 10s
runtimeRequestTimeout: 5m
# The harness imported busybox and pause: never collect them, and never
# evict for a test machine's disk or memory.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "1Mi", "nodefs.available": "1%%", "imagefs.available": "1%%", "nodefs.inodesFree": "1%%"}
serializeImagePulls: false
registerNode: true
`, k.NodeIP, port, pki.CAFile(), "unix://"+k.ctrd.Address, k.cgroupRoot, filepath.Join(k.Root, "pod-logs"))
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		return err
	}
	p, err := startKubeProc("kubelet", logs, bin,
		"--config="+config,
		"--kubeconfig="+kubeconfig,
		"--root-dir="+k.KubeletRoot,
		"--hostname-override="+k.NodeName,
		"--node-ip="+k.NodeIP,
		"--v=2",
	)
	if err != nil {
		return err
	}
	k.procs = append(k.procs, p)
	// Ready means the runtime answered, the network (containerd's CNI
	// config) is ready and the node's status is posted.
	return k.waitFor(ctx, p, 3*time.Minute, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		n, err := k.Client.CoreV1().Nodes().Get(cctx, k.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node %s: %s: %s", k.NodeName, c.Reason, c.Message)
			}
		}
		return fmt.Errorf("node %s: no Ready condition yet", k.NodeName)
	})
}

func (k *Kube) createRuntimeClasses(ctx context.Context, handlers []string) error {
	for _, h := range handlers {
		rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: h}, Handler: h}
		if _, err := k.Client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("harness: RuntimeClass %s: %w", h, err)
		}
	}
	return nil
}

// Namespace creates a namespace and waits until pods can run in it: the
// controller manager has made its default service account and the
// kube-root-ca.crt ConfigMap that the kube-api-access volume projects.
func (k *Kube) Namespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := k.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			_, err = k.Client.CoreV1().ConfigMaps(name).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("harness: namespace %s not ready for pods: %w; controller manager log:\n%s",
				name, err, k.LogTail("kube-controller-manager", 3000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// deleteAllPods deletes every pod and waits until the kubelet has stopped
// them and the objects are gone.
func (k *Kube) deleteAllPods(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	pods, err := k.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("harness: list pods: %w", err)
	}
	grace := int64(1)
	for _, p := range pods.Items {
		k.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	}
	for {
		pods, err := k.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err == nil && len(pods.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: pods not gone after deletion within %s", limit)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// removeKubeletSandboxes stops and removes the sandboxes the kubelet made
// (the kubelet removes a deleted pod's sandbox only at its next garbage
// collection, up to a minute later) so that containerd is as before.
func (k *Kube) removeKubeletSandboxes(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	rt := k.ctrd.CRI.Runtime
	resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("harness: list pods: %w", err)
	}
	var errs []error
	for _, s := range resp.Items {
		if s.Annotations["kubernetes.io/config.source"] != "api" || s.Labels["io.kubernetes.pod.uid"] == "" {
			continue // not a kubelet's API pod
		}
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("harness: stop kubelet pod %s: %w", s.Id, err))
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("harness: remove kubelet pod %s: %w", s.Id, err))
		}
	}
	return errors.Join(errs...)
}
