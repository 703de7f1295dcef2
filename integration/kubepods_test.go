//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The content the pod's volumes and environment carry.
const (
	kubeGreeting    = "hello from a ConfigMap"
	kubePassword    = "s3cret-from-a-Secret"
	kubeEnvValue    = "value-from-a-ConfigMap"
	kubeUpdated     = "updated greeting"
	kubeTermination = "init-container-done"
)

var kubeSizeLimit = resource.MustParse("1Mi")

// TestKubeletPod runs one pod per runtime class through the real kubelet:
// a main container with a ConfigMap volume, a Secret volume, env from a
// ConfigMap and an exec readiness probe that passes only once its sidecar
// has written into their shared emptyDir. It checks each through exec and
// logs as a user would (kubectl exec / logs), then deletes the pod and
// checks that nothing of it is left running. runc is the baseline.
func TestKubeletPod(t *testing.T) {
	k := requireKube(t)
	for _, rc := range handlerRows {
		t.Run(rc.name, func(t *testing.T) {
			if rc.coco {
				requireGuest(t)
			}
			ctx := testCtx(t, 8*time.Minute)
			ns := "kubelet-pod-" + rc.name
			if err := k.Namespace(ctx, ns); err != nil {
				t.Fatal(err)
			}
			pod := startKubePod(ctx, t, k, ns, rc.name)
			t.Run("volumes", func(t *testing.T) {
				kubeExpect(ctx, t, k, pod, "main", kubeGreeting, "cat", "/etc/config/greeting")
				kubeExpect(ctx, t, k, pod, "main", kubePassword, "cat", "/etc/secret/password")
				kubeExpect(ctx, t, k, pod, "main", pod.Name, "cat", "/etc/podinfo/name")
			})
			t.Run("subPath", func(t *testing.T) {
				kubeExpect(ctx, t, k, pod, "main", kubeGreeting, "cat", "/etc/greeting-file")
			})
			t.Run("emptyDirSizeLimit", func(t *testing.T) {
				if !rc.coco {
					// The kubelet enforces sizeLimit by evicting the
					// pod, not by ENOSPC: nothing to compare.
					t.Skip("runc: sizeLimit is enforced by eviction, not ENOSPC")
				}
				// 2 MiB into a 1 MiB emptyDir.
				out := kubeExec(ctx, t, k, pod, "main", "sh", "-c", "dd if=/dev/zero of=/limited/f bs=1024 count=2048 2>&1; echo rc=$?")
				if !strings.Contains(out, "No space left on device") || strings.Contains(out, "rc=0") {
					t.Errorf("writing past the emptyDir's 1Mi: %q, want ENOSPC", out)
				}
			})
			t.Run("env", func(t *testing.T) {
				kubeExpect(ctx, t, k, pod, "main", kubeEnvValue+" "+kubeGreeting, "sh", "-c", `echo "$FROM_KEY $greeting"`)
			})
			t.Run("emptyDir", func(t *testing.T) {
				kubeExpect(ctx, t, k, pod, "main", "written by side", "cat", "/shared/msg")
				// And the other way round, while both run.
				kubeExec(ctx, t, k, pod, "main", "sh", "-c", "echo written by main > /shared/back")
				kubeExpect(ctx, t, k, pod, "side", "written by main", "cat", "/shared/back")
			})
			t.Run("serviceAccountToken", func(t *testing.T) {
				token := kubeExec(ctx, t, k, pod, "main", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token")
				checkJWT(t, token, "system:serviceaccount:"+ns+":default")
				kubeExpect(ctx, t, k, pod, "main", ns, "cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace")
				ca := kubeExec(ctx, t, k, pod, "main", "cat", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
				if !strings.Contains(ca, "BEGIN CERTIFICATE") {
					t.Errorf("ca.crt: %q", ca)
				}
			})
			t.Run("terminationMessage", func(t *testing.T) {
				var got string
				for _, st := range pod.Status.InitContainerStatuses {
					if st.State.Terminated != nil {
						got = st.State.Terminated.Message
					}
				}
				if strings.TrimSpace(got) != kubeTermination {
					t.Errorf("init container's termination message %q, want %q; statuses %+v", got, kubeTermination, pod.Status.InitContainerStatuses)
				}
			})
			t.Run("configMapUpdate", func(t *testing.T) {
				kubeConfigMapUpdate(ctx, t, k, pod)
			})
			t.Run("logs", func(t *testing.T) {
				logs, err := k.Client.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "main"}).DoRaw(ctx)
				if err != nil {
					t.Fatalf("GetLogs: %v", err)
				}
				if want := "main started: " + kubeGreeting; !strings.Contains(string(logs), want) {
					t.Errorf("logs %q, want %q", logs, want)
				}
			})
			t.Run("kernel", func(t *testing.T) {
				got := strings.TrimSpace(kubeExec(ctx, t, k, pod, "main", "uname", "-r"))
				want := hostKernelRelease(t)
				if rc.coco {
					want = guestKernelRelease(t)
				}
				if got != want {
					t.Errorf("kernel %q, want %q (coco=%v)", got, want, rc.coco)
				}
			})
			deleteKubePod(ctx, t, k, pod)
		})
	}
}

// startKubePod creates the pod (and its ConfigMap and Secret) and waits
// until it is Ready, i.e. the exec readiness probe passed.
func startKubePod(ctx context.Context, t *testing.T, k *harness.Kube, ns, runtimeClass string) *corev1.Pod {
	t.Helper()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "app-config", Namespace: ns},
		Data:       map[string]string{"greeting": kubeGreeting, "key": kubeEnvValue},
	}
	if _, err := k.Client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "app-secret", Namespace: ns},
		StringData: map[string]string{"password": kubePassword},
	}
	if _, err := k.Client.CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rcName := runtimeClass
	grace := int64(1)
	container := func(name, script string) corev1.Container {
		return corev1.Container{
			Name:            name,
			Image:           harness.BusyboxImage,
			ImagePullPolicy: corev1.PullNever, // imported by the harness; there is no registry
			Command:         []string{"sh", "-c", script},
			VolumeMounts:    []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}},
		}
	}
	main := container("main", `echo "main started: $(cat /etc/config/greeting)"; sleep 3; touch /tmp/ready; exec sleep 3600`)
	main.VolumeMounts = append(main.VolumeMounts,
		corev1.VolumeMount{Name: "config", MountPath: "/etc/config"},
		corev1.VolumeMount{Name: "secret", MountPath: "/etc/secret"},
		corev1.VolumeMount{Name: "config", MountPath: "/etc/greeting-file", SubPath: "greeting"},
		corev1.VolumeMount{Name: "limited", MountPath: "/limited"},
		corev1.VolumeMount{Name: "podinfo", MountPath: "/etc/podinfo"})
	main.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}}}}
	main.Env = []corev1.EnvVar{{Name: "FROM_KEY", ValueFrom: &corev1.EnvVarSource{
		ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}, Key: "key"}}}}
	// The probe fails until main has been up for a while, so Ready says an
	// exec probe ran and its exit status counted.
	main.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/ready"}}},
		PeriodSeconds: 2, TimeoutSeconds: 30,
	}
	side := container("side", `echo written by side > /shared/msg; exec sleep 3600`)
	// Its termination message goes into the pod status when it exits.
	init := container("init", `echo `+kubeTermination+` > /dev/termination-log`)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns,
			Annotations: map[string]string{"emptydir.coco-runtime.io/limited": kubeSizeLimit.String()}},
		Spec: corev1.PodSpec{
			NodeName:                      k.NodeName, // no scheduler
			RuntimeClassName:              &rcName,
			TerminationGracePeriodSeconds: &grace,
			InitContainers:                []corev1.Container{init},
			Containers:                    []corev1.Container{main, side},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}}}},
				{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: sec.Name}}},
				{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
					Items: []corev1.DownwardAPIVolumeFile{{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
				{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				// The CRI does not carry sizeLimit: our runtime reads the
				// annotation below instead (the README's volume table).
				{Name: "limited", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &kubeSizeLimit}}},
			},
		},
	}
	created, err := k.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := waitKubePod(ctx, k, created, 5*time.Minute, podReady)
	if err != nil {
		t.Fatalf("pod %s/%s (runtimeClassName %s) not Ready: %v\n%s", ns, pod.Name, runtimeClass, err, kubePodReport(ctx, k, got))
	}
	t.Logf("pod %s/%s Ready in %s", ns, pod.Name, time.Since(start).Round(time.Millisecond))
	return got
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// waitKubePod polls the pod until cond holds; a pod that failed ends the
// wait early.
func waitKubePod(ctx context.Context, k *harness.Kube, pod *corev1.Pod, limit time.Duration, cond func(*corev1.Pod) bool) (*corev1.Pod, error) {
	deadline := time.Now().Add(limit)
	last := pod
	for {
		p, err := k.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil {
			last = p
			if cond(p) {
				return p, nil
			}
			if p.Status.Phase == corev1.PodFailed {
				return p, fmt.Errorf("pod failed: %s", p.Status.Message)
			}
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("not within %s (last error %v)", limit, err)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// kubePodReport is what a user would look at: the pod's status and events
// (kubectl describe) and the end of the kubelet's log.
func kubePodReport(ctx context.Context, k *harness.Kube, pod *corev1.Pod) string {
	var b strings.Builder
	if pod != nil {
		st, _ := json.MarshalIndent(pod.Status, "", "  ")
		fmt.Fprintf(&b, "status: %s\n", st)
		evs, err := k.Client.CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, e := range evs.Items {
				fmt.Fprintf(&b, "event %s %s %s: %s\n", e.InvolvedObject.Name, e.Type, e.Reason, e.Message)
			}
		}
	}
	fmt.Fprintf(&b, "kubelet log tail:\n%s", k.LogTail("kubelet", 4000))
	return b.String()
}

// kubeExec runs a command in a container the way kubectl exec does (API
// server → kubelet → containerd's streaming server) and returns stdout.
func kubeExec(ctx context.Context, t *testing.T, k *harness.Kube, pod *corev1.Pod, container string, cmd ...string) string {
	t.Helper()
	req := k.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).
		SubResource("exec").VersionedParams(&corev1.PodExecOptions{
		Container: container, Command: cmd, Stdout: true, Stderr: true,
	}, scheme.ParameterCodec)
	exec, err := remotecommand.NewWebSocketExecutor(k.Config, "GET", req.URL().String())
	if err != nil {
		t.Fatalf("exec %v: %v", cmd, err)
	}
	var stdout, stderr bytes.Buffer
	ectx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := exec.StreamWithContext(ectx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}); err != nil {
		t.Fatalf("exec %v in %s: %v (stdout %q, stderr %q)", cmd, container, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func kubeExpect(ctx context.Context, t *testing.T, k *harness.Kube, pod *corev1.Pod, container, want string, cmd ...string) {
	t.Helper()
	if got := strings.TrimSpace(kubeExec(ctx, t, k, pod, container, cmd...)); got != want {
		t.Errorf("%v in %s: %q, want %q", cmd, container, got, want)
	}
}

// checkJWT checks that token is a JWT (three base64url parts, a JSON
// header naming its algorithm) for subject sub.
func checkJWT(t *testing.T, token, sub string) {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT (%d parts): %.40q", len(parts), token)
	}
	var header struct{ Alg, Kid string }
	var claims struct {
		Sub string
		Aud []string
		Exp int64
	}
	for i, v := range []any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("JWT part %d: %v", i, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("JWT part %d: %v: %s", i, err, raw)
		}
	}
	if header.Alg != "RS256" || claims.Sub != sub || claims.Exp <= time.Now().Unix() {
		t.Errorf("token header %+v claims %+v, want RS256 for %s, unexpired", header, claims, sub)
	}
}

// deleteKubePod deletes the pod through the API and checks that the kubelet
// removed everything of it: its sandbox and containers from containerd, and
// no process (shim, QEMU, vsock daemon), mount, state directory or shim
// socket of theirs, nor the pod's directory under the kubelet's root.
func deleteKubePod(ctx context.Context, t *testing.T, k *harness.Kube, pod *corev1.Pod) {
	t.Helper()
	rt := shared.ctrd.CRI.Runtime
	sel := map[string]string{"io.kubernetes.pod.uid": string(pod.UID)}
	ids := func() []string {
		var ids []string
		sbs, _ := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: sel}})
		for _, s := range sbs.GetItems() {
			ids = append(ids, s.Id)
		}
		cs, _ := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: sel}})
		for _, c := range cs.GetContainers() {
			ids = append(ids, c.Id)
		}
		return ids
	}
	before := ids()
	if len(before) == 0 {
		t.Fatal("the pod has no sandbox or container in containerd")
	}
	start := time.Now()
	if err := k.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The kubelet removes a deleted pod's sandbox itself (at the latest at
	// its next garbage collection, once a minute).
	podDir := filepath.Join(k.KubeletRoot, "pods", string(pod.UID))
	var left []string
	for time.Since(start) < 3*time.Minute {
		left = left[:0]
		if _, err := k.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err == nil {
			left = append(left, "pod object")
		}
		for _, id := range ids() {
			left = append(left, "in containerd: "+id)
		}
		left = append(left, shared.ctrd.Leftovers(before...)...)
		if _, err := os.Stat(podDir); err == nil {
			left = append(left, "kubelet pod directory "+podDir)
		}
		if len(left) == 0 {
			t.Logf("pod and its %d sandbox/containers gone %s after deletion", len(before), time.Since(start).Round(100*time.Millisecond))
			return
		}
		time.Sleep(time.Second)
	}
	t.Errorf("left 3 minutes after the pod was deleted:\n  %s\n%s", strings.Join(left, "\n  "), kubePodReport(ctx, k, pod))
}

// kubeConfigMapUpdate changes the ConfigMap and waits until the running
// container's volume shows the new value, as it does under runc within the
// kubelet's sync period plus the shim's poll; the time taken is logged so
// that the two runtimes can be compared.
func kubeConfigMapUpdate(ctx context.Context, t *testing.T, k *harness.Kube, pod *corev1.Pod) {
	t.Helper()
	cms := k.Client.CoreV1().ConfigMaps(pod.Namespace)
	cm, err := cms.Get(ctx, "app-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["greeting"] = kubeUpdated
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var got string
	for time.Since(start) < 2*time.Minute {
		if got = strings.TrimSpace(kubeExec(ctx, t, k, pod, "main", "cat", "/etc/config/greeting")); got == kubeUpdated {
			t.Logf("ConfigMap update visible in the container after %s", time.Since(start).Round(100*time.Millisecond))
			return
		}
		time.Sleep(time.Second)
	}
	t.Errorf("ConfigMap volume still %q 2 minutes after the update to %q", got, kubeUpdated)
}

// TestKubeletHostPathRefused: a hostPath volume in a class that refuses host
// directories (as a TEE class does by default) fails the container with a
// message naming the mount, in the pod's events where kubectl describe shows
// it; deleting the pod leaves nothing.
func TestKubeletHostPathRefused(t *testing.T) {
	k := requireKube(t)
	requireGuest(t)
	ctx := testCtx(t, 6*time.Minute)
	ns := "kubelet-hostpath"
	if err := k.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	rc := handlerRefuseHostDirs
	grace := int64(1)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hostpath", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:                      k.NodeName,
			RuntimeClassName:              &rc,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "main", Image: harness.BusyboxImage, ImagePullPolicy: corev1.PullNever,
				Command:      []string{"sleep", "3600"},
				VolumeMounts: []corev1.VolumeMount{{Name: "host", MountPath: "/host"}},
			}},
			Volumes: []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: t.TempDir()}}}},
		},
	}
	created, err := k.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const want = "cannot be shared with a confidential pod"
	deadline := time.Now().Add(4 * time.Minute)
	for {
		evs, err := k.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		found := ""
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == pod.Name && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, want) {
				found = e.Message
			}
		}
		if found != "" {
			if !strings.Contains(found, "/host") {
				t.Errorf("event does not name the mount /host: %s", found)
			}
			t.Logf("event: %s", found)
			break
		}
		if time.Now().After(deadline) {
			got, _ := k.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			t.Fatalf("no Warning event with %q (err %v)\n%s", want, err, kubePodReport(ctx, k, got))
		}
		time.Sleep(time.Second)
	}
	deleteKubePod(ctx, t, k, created)
}
