//go:build integration

package integration

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
)

// TestInitDataReachesGuest: init-data sent as a pod annotation is attached
// to the VM, validated by the agent and published in the guest; the agent
// reports the digest of the aa.toml it wrote (read back from
// /run/confidential-containers/initdata) on the console, and it equals the
// digest of the aa.toml the pod sent.
func TestInitDataReachesGuest(t *testing.T) {
	requireGuest(t)
	aa := "[token_configs.kbs]\nurl = \"http://127.0.0.1:8080\"\n"
	toml := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = '''\n" + aa + "'''\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\n'''\n"
	ctx := context.Background()
	cri := shared.ctrd.CRI
	pod, err := cri.RunPod(ctx, "coco", harness.PodConfig(harness.PodOptions{Name: "initdata", LogDir: t.TempDir(),
		Annotations: map[string]string{annotationInitData: gzipBase64(t, toml)}}))
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	defer cri.RemovePod(ctx, pod.ID)

	// TOML multi-line literal strings drop the newline right after the
	// opening quotes: the file holds aa exactly.
	want := fmt.Sprintf("init-data file aa.toml sha256:%x", sha256.Sum256([]byte(aa)))
	console := filepath.Join("/run/coco", pod.ID, "vm", "console.log")
	waitFor(t, 30*time.Second, func() (bool, string) {
		b, err := os.ReadFile(console)
		if err != nil {
			return false, err.Error()
		}
		if !strings.Contains(string(b), "init-data file aa.toml sha256:") {
			return false, "the agent has not reported the published aa.toml yet"
		}
		if !strings.Contains(string(b), want) {
			return false, fmt.Sprintf("guest aa.toml differs from the one sent; console:\n%s", b)
		}
		return true, ""
	})
}
