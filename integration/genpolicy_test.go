//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

// genPolicyPod is a realistic pod: an init container, two containers, an
// exec readiness probe, env from a ConfigMap, a Secret and the downward
// API, volumes of every kind the generator supports, a securityContext
// with dropped capabilities, a read-only root filesystem, RuntimeDefault
// seccomp and a non-root user, and a pod sysctl.
const genPolicyPod = `apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  MODE: production
  GREETING: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: app-secret
stringData:
  TOKEN: s3cr3t-value
---
apiVersion: v1
kind: Pod
metadata:
  name: gp-web
  namespace: coco-it
  labels:
    app: web
spec:
  dnsPolicy: ClusterFirst
  securityContext:
    fsGroup: 2000
    sysctls:
    - name: net.ipv4.ip_unprivileged_port_start
      value: "0"
  initContainers:
  - name: init
    image: localhost/coco-test/busybox:latest
    command: ["sh", "-c", "echo ready > /work/ready"]
    volumeMounts:
    - name: work
      mountPath: /work
  containers:
  - name: app
    image: localhost/coco-test/busybox:latest
    command: ["sh", "-c"]
    args: ["echo $(GREETING) $(POD_NAME) in $(NS); exec sleep 1000"]
    workingDir: /work
    env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: NS
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    - name: TOKEN
      valueFrom:
        secretKeyRef:
          name: app-secret
          key: TOKEN
    - name: URL
      value: http://api.$(NS).svc:8080/$$(LITERAL)
    envFrom:
    - configMapRef:
        name: app-config
    readinessProbe:
      exec:
        command: ["cat", "/work/ready"]
    securityContext:
      runAsUser: 1000
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop: ["ALL"]
        add: ["NET_BIND_SERVICE"]
      seccompProfile:
        type: RuntimeDefault
    volumeMounts:
    - name: work
      mountPath: /work
    - name: config
      mountPath: /etc/app
    - name: secret
      mountPath: /etc/secret
    - name: info
      mountPath: /etc/info
    - name: bundle
      mountPath: /etc/bundle
    - name: logs
      mountPath: /host/log
      readOnly: true
  - name: sidecar
    image: localhost/coco-test/busybox:latest
    args: ["sleep", "1000"]
    volumeMounts:
    - name: work
      mountPath: /work
      readOnly: true
  volumes:
  - name: work
    emptyDir: {}
  - name: config
    configMap:
      name: app-config
  - name: secret
    secret:
      secretName: app-secret
  - name: info
    downwardAPI:
      items:
      - path: labels
        fieldRef:
          fieldPath: metadata.labels
  - name: bundle
    projected:
      sources:
      - configMap:
          name: app-config
  - name: logs
    hostPath:
      path: /var/log
`

// generatePolicy runs `containerd-shim-coco-v2 policy generate` on the pod
// and returns the init-data annotation.
func generatePolicy(t *testing.T, pod, kubeletRoot string) string {
	t.Helper()
	dir := t.TempDir()
	f := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(f, []byte(pod), 0o600); err != nil {
		t.Fatal(err)
	}
	archives, _ := filepath.Glob(filepath.Join(shared.ctrd.Root, "images", "*busybox*.tar"))
	if len(archives) != 1 {
		t.Fatalf("busybox OCI archive: found %v", archives)
	}
	toml := filepath.Join(dir, "initdata.toml")
	cmd := exec.Command(shared.bins.CocoShim, "policy", "generate", "-f", f, "--image-layout", archives[0],
		"--kubelet-root", kubeletRoot, "--sandbox-image", harness.PauseImage, "-o", toml,
		"--engine", filepath.Join(shared.guestDir, "coco-policy"))
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("policy generate: %v\n%s", err, stderrOf(err))
	}
	t.Logf("policy generate took %s", time.Since(start))
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, initdata.AnnotationKey+": "); ok {
			return v
		}
	}
	t.Fatalf("policy generate printed no annotation:\n%s", out)
	return ""
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// TestGeneratedPolicy runs the realistic pod under its generated policy
// through CRI calls shaped like the kubelet's, then changes one pinned
// field at a time and expects a refusal naming that field.
func TestGeneratedPolicy(t *testing.T) {
	requireGuest(t)
	ctx := testCtx(t, 8*time.Minute)
	cri := shared.ctrd.CRI
	kroot := filepath.Join(t.TempDir(), "kubelet")
	ann := generatePolicy(t, genPolicyPod, kroot)
	k, err := newKubelet(kroot, []byte(genPolicyPod))
	if err != nil {
		t.Fatal(err)
	}
	annotations := map[string]string{initdata.AnnotationKey: ann}
	pod, err := cri.RunPod(ctx, "coco", k.sandboxConfig(t.TempDir(), annotations))
	if err != nil {
		t.Fatalf("RunPodSandbox under the generated policy: %v", err)
	}
	t.Cleanup(func() { cri.RemovePod(context.Background(), pod.ID) })

	start := func(name string, mutate func(*runtimeapi.ContainerConfig), attempt uint32) (string, error) {
		cfg, err := k.containerConfig(name, attempt)
		if err != nil {
			t.Fatal(err)
		}
		if mutate != nil {
			mutate(cfg)
		}
		return cri.StartContainer(ctx, pod, cfg)
	}
	initID, err := start("init", nil, 0)
	if err != nil {
		t.Fatalf("init container: %v", err)
	}
	if st, err := cri.WaitExited(ctx, initID, time.Minute); err != nil || st.ExitCode != 0 {
		t.Fatalf("init container: %v, exit %v", err, st.GetExitCode())
	}
	ids := map[string]string{}
	for _, name := range []string{"app", "sidecar"} {
		if ids[name], err = start(name, nil, 0); err != nil {
			t.Fatalf("container %s under the generated policy: %v", name, err)
		}
	}
	// The readiness probe's exec is allowed; another command is not.
	if out, _, code, err := cri.Exec(ctx, ids["app"], 30*time.Second, "cat", "/work/ready"); err != nil || code != 0 || strings.TrimSpace(out) != "ready" {
		t.Fatalf("readiness probe exec: %q, code %d, %v", out, code, err)
	}
	_, _, _, err = cri.Exec(ctx, ids["app"], 30*time.Second, "cat", "/etc/secret/TOKEN")
	if err == nil || !strings.Contains(err.Error(), `exec: ["cat", "/etc/secret/TOKEN"] is not allowed in ["app"]`) {
		t.Fatalf("unlisted exec: %v", err)
	}

	attempt := uint32(0)
	for _, c := range []struct {
		field, container string
		mutate           func(*runtimeapi.ContainerConfig)
		want             string
	}{
		{"image", "sidecar", func(c *runtimeapi.ContainerConfig) {
			c.Image = &runtimeapi.ImageSpec{Image: harness.PauseImage, UserSpecifiedImage: harness.PauseImage}
			c.Command = []string{"/pause"}
		}, `containers[sidecar].image: received "` + harness.PauseImage + `"`},
		{"arg", "sidecar", func(c *runtimeapi.ContainerConfig) { c.Args = []string{"sleep", "999"} },
			`containers[sidecar].args: received ["sleep", "999"], expected ["sleep", "1000"]`},
		{"env", "sidecar", func(c *runtimeapi.ContainerConfig) {
			c.Envs = append(c.Envs, &runtimeapi.KeyValue{Key: "DEBUG", Value: []byte("1")})
		}, `containers[sidecar].env: "DEBUG" (value sha256:6b86b273) not allowed`},
		{"env value", "app", func(c *runtimeapi.ContainerConfig) {
			for _, e := range c.Envs {
				if e.Key == "MODE" {
					e.Value = []byte("debug")
				}
			}
		}, `containers[app].env: "MODE" has value sha256:`},
		{"mount destination", "sidecar", func(c *runtimeapi.ContainerConfig) { c.Mounts[0].ContainerPath = "/etc/work" },
			`containers[sidecar].mounts[/etc/work]: bind of`},
		{"mount over the token", "sidecar", func(c *runtimeapi.ContainerConfig) {
			c.Mounts[0].ContainerPath = "/var/run/secrets/kubernetes.io/serviceaccount"
			c.Mounts = append(c.Mounts[:1], c.Mounts[2:]...)
		}, `containers[sidecar].mounts[/var/run/secrets/kubernetes.io/serviceaccount]`},
		{"capability", "app", func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.Capabilities.AddCapabilities = append(c.Linux.SecurityContext.Capabilities.AddCapabilities, "SYS_ADMIN")
		}, `containers[app].capabilities: CAP_SYS_ADMIN not allowed`},
		{"user", "app", func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 0}
		},
			`containers[app].user.uid: received 0, expected 1000`},
		{"namespace", "sidecar", func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
		}, `containers[sidecar].namespaces.pid: received path`},
		{"cwd", "app", func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "/tmp" },
			`containers[app].cwd: received "/tmp", expected "/work"`},
		{"readOnlyRootFilesystem", "app", func(c *runtimeapi.ContainerConfig) { c.Linux.SecurityContext.ReadonlyRootfs = false },
			`containers[app].root.readonly: received false`},
		{"seccomp", "app", func(c *runtimeapi.ContainerConfig) { c.Linux.SecurityContext.Seccomp = nil },
			`containers[app].seccomp`},
	} {
		t.Run(c.field, func(t *testing.T) {
			attempt++
			id, err := start(c.container, c.mutate, attempt)
			if err == nil {
				t.Fatalf("CreateContainer with a changed %s was allowed; containerd's spec:\n%s", c.field, runtimeSpec(t, id))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CreateContainer with a changed %s: %v\nwant it to contain %q", c.field, err, c.want)
			}
			t.Logf("refused: %v", err)
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "debug") && c.field == "env value" {
				t.Fatalf("the denial shows an env value: %v", err)
			}
		})
	}
	requireRunning(t, cri, ids["app"])
	t.Run("privileged", func(t *testing.T) { privilegedRefused(t, k, annotations) })

	// Pod-level fields: the sandbox itself is refused.
	for _, c := range []struct {
		field  string
		mutate func(*runtimeapi.PodSandboxConfig)
		want   string
	}{
		{"namespace", func(p *runtimeapi.PodSandboxConfig) { p.Metadata.Namespace = "default" },
			`pod.namespace: received "default", expected "coco-it"`},
		{"sysctls", func(p *runtimeapi.PodSandboxConfig) { p.Linux.Sysctls["net.ipv4.ip_forward"] = "1" },
			`sandbox.sysctls`},
	} {
		t.Run("pod "+c.field, func(t *testing.T) {
			cfg := k.sandboxConfig(t.TempDir(), annotations)
			cfg.Metadata.Attempt = 1
			c.mutate(cfg)
			p, err := cri.RunPod(ctx, "coco", cfg)
			if err == nil {
				cri.RemovePod(context.Background(), p.ID)
				t.Fatalf("RunPodSandbox with a changed %s was allowed", c.field)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("RunPodSandbox with a changed %s: %v\nwant it to contain %q", c.field, err, c.want)
			}
			if m := sandboxIDInError.FindStringSubmatch(err.Error()); m != nil {
				assertNoLeftovers(t, m[1])
			}
		})
	}
}

// privilegedRefused: containerd lets a container be privileged only in a
// privileged sandbox, whose spec is otherwise the same (so the policy lets
// it run); the privileged container itself is refused.
func privilegedRefused(t *testing.T, k *kubelet, annotations map[string]string) {
	ctx := testCtx(t, 3*time.Minute)
	cri := shared.ctrd.CRI
	cfg := k.sandboxConfig(t.TempDir(), annotations)
	cfg.Metadata.Attempt = 2
	cfg.Linux.SecurityContext.Privileged = true
	pod, err := cri.RunPod(ctx, "coco", cfg)
	if err != nil {
		t.Fatalf("RunPodSandbox (privileged sandbox): %v", err)
	}
	t.Cleanup(func() { cri.RemovePod(context.Background(), pod.ID) })
	c, err := k.containerConfig("sidecar", 100)
	if err != nil {
		t.Fatal(err)
	}
	c.Linux.SecurityContext.Privileged = true
	_, err = cri.StartContainer(ctx, pod, c)
	if err == nil || !strings.Contains(err.Error(), "containers[sidecar].privileged: received a privileged spec") {
		t.Fatalf("privileged container: %v", err)
	}
}

// runtimeSpec is the OCI spec containerd wrote for a container (verbose
// ContainerStatus), for failure messages.
func runtimeSpec(t *testing.T, id string) string {
	st, err := shared.ctrd.CRI.Runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return err.Error()
	}
	var info struct {
		RuntimeSpec json.RawMessage `json:"runtimeSpec"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
		return err.Error()
	}
	return string(info.RuntimeSpec)
}
