//go:build integration

package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/configs/policies"
	"github.com/coco-runtime/coco/integration/harness"
)

const (
	annotationInitData = "io.katacontainers.config.hypervisor.cc_init_data"
	annotationPolicy   = "io.katacontainers.config.agent.policy"
	policyDenied       = "denied by agent policy (rule agent_policy.ExecProcessRequest)"
)

// startSleeper runs a pod on handler with annotations and one busybox
// container that sleeps, and returns the CRI client, pod and container id.
func startSleeper(t *testing.T, handler, name string, annotations map[string]string) (*harness.CRI, *harness.Pod, string) {
	t.Helper()
	requireGuest(t)
	ctx := context.Background()
	cri := shared.ctrd.CRI
	pod, err := cri.RunPod(ctx, handler, harness.PodConfig(harness.PodOptions{Name: name, LogDir: t.TempDir(), Annotations: annotations}))
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	t.Cleanup(func() { cri.RemovePod(context.Background(), pod.ID) })
	id, err := cri.StartContainer(ctx, pod, harness.ContainerConfig("app", "app.log", "sleep", "1000"))
	if err != nil {
		t.Fatalf("start container: %v", err)
	}
	return cri, pod, id
}

func requireRunning(t *testing.T, cri *harness.CRI, id string) {
	t.Helper()
	st, err := cri.Runtime.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container %s is %v after a denied request; want it still running", id, st.Status.State)
	}
}

// TestDefaultTEEPolicyDeniesExec: a runtime class proposing the default TEE
// policy gets the pod lifecycle but no exec, and the container keeps running.
func TestDefaultTEEPolicyDeniesExec(t *testing.T) {
	cri, _, id := startSleeper(t, handlerTEEPolicy, "teepolicy", nil)
	_, _, _, err := cri.Exec(context.Background(), id, 30*time.Second, "cat", "/etc/hostname")
	if err == nil || !strings.Contains(err.Error(), policyDenied) {
		t.Fatalf("ExecSync under the default TEE policy: err = %v, want it to contain %q", err, policyDenied)
	}
	requireRunning(t, cri, id)
}

// TestInitDataPolicyAllowsExactExec: the pod owner's policy travels in
// init-data (annotation → virtio-blk image → guest), wins over the runtime
// class's default, and allows exactly one exec.
func TestInitDataPolicyAllowsExactExec(t *testing.T) {
	rego := strings.Replace(policies.DefaultTEE, "allowed_exec_argv := []", `allowed_exec_argv := [["cat", "/etc/hostname"]]`, 1)
	rego = strings.Replace(rego, "default ReadStreamRequest := false", "default ReadStreamRequest := true", 1)
	toml := "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"http://127.0.0.1:8080\"\n'''\n\"policy.rego\" = '''\n" + rego + "'''\n"
	cri, _, id := startSleeper(t, handlerTEEPolicy, "initdata-policy", map[string]string{annotationInitData: gzipBase64(t, toml)})
	ctx := context.Background()

	stdout, _, code, err := cri.Exec(ctx, id, 30*time.Second, "cat", "/etc/hostname")
	if err != nil || code != 0 {
		t.Fatalf("allowed exec: code %d, err %v", code, err)
	}
	if strings.TrimSpace(stdout) != "initdata-policy" {
		t.Fatalf("allowed exec printed %q, want the pod hostname", stdout)
	}
	_, _, _, err = cri.Exec(ctx, id, 30*time.Second, "cat", "/etc/passwd")
	if err == nil || !strings.Contains(err.Error(), policyDenied) {
		t.Fatalf("other exec: err = %v, want %q", err, policyDenied)
	}
	requireRunning(t, cri, id)
}

// TestBrokenPolicyFailsPod: a policy that does not compile fails
// RunPodSandbox with the compiler's message, and leaves nothing behind.
func TestBrokenPolicyFailsPod(t *testing.T) {
	requireGuest(t)
	broken := "package agent_policy\n\nStartRequest if {\n"
	cfg := harness.PodConfig(harness.PodOptions{Name: "broken-policy", LogDir: t.TempDir(),
		Annotations: map[string]string{annotationPolicy: base64.StdEncoding.EncodeToString([]byte(broken))}})
	pod, err := shared.ctrd.CRI.RunPod(context.Background(), "coco", cfg)
	if err == nil {
		shared.ctrd.CRI.RemovePod(context.Background(), pod.ID)
		t.Fatal("RunPodSandbox accepted a policy that does not compile")
	}
	for _, want := range []string{"policy", "rego_parse_error", "policy.rego:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("RunPodSandbox error %q lacks %q", err, want)
		}
	}
	if m := sandboxIDInError.FindStringSubmatch(err.Error()); m != nil {
		assertNoLeftovers(t, m[1])
	} else {
		t.Errorf("CRI error does not name the failed sandbox: %v", err)
	}
}

func gzipBase64(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}
