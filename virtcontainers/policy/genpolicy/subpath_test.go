package genpolicy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// subPathPod is app.yaml's sidecar alone, with a subPath of its emptyDir
// besides the whole volume.
const subPathPod = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 2000}
      containers:
      - name: sidecar
        image: localhost/coco-test/busybox:latest
        args: ["sleep", "1000"]
        volumeMounts:
        - {name: work, mountPath: /work, readOnly: true}
        - {name: work, mountPath: /logs, subPath: SUB}
      volumes:
      - {name: work, emptyDir: {}}
`

// A subPath of an emptyDir reaches the guest as <emptyDir>/<subPath> (the
// shim's form): the policy admits exactly that path, cleaned as the
// kubelet cleans it, and neither the kubelet's own source nor another path
// of the volume.
func TestGeneratedPolicyEmptyDirSubPath(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(file, []byte(strings.Replace(subPathPod, "SUB", "logs/./app/", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	e := compile(t, generateFile(t, file, Options{}).Rego)
	root := "/var/lib/kubelet/pods/0f1e2d3c-aaaa-bbbb-cccc-111122223333/"
	with := func(src string) map[string]any {
		s := sidecarSpec()
		s["mounts"] = append(s["mounts"].([]any), map[string]any{"destination": "/logs", "type": "bind", "source": src, "options": []any{"rbind", "rprivate", "rw"}})
		return s
	}
	ok := root + "volumes/kubernetes.io~empty-dir/work/logs/app"
	if d := decide(t, e, "PrepareContainerRequest", prepare(with(ok))); !d.Allowed {
		t.Fatalf("%s denied: %s", ok, d.Reason)
	}
	for _, src := range []string{
		root + "volume-subpaths/work/sidecar/1",
		root + "volumes/kubernetes.io~empty-dir/work",
		root + "volumes/kubernetes.io~empty-dir/work/logs",
		root + "volumes/kubernetes.io~empty-dir/work/logs/app/../../x",
		root + "volumes/kubernetes.io~empty-dir/other/logs/app",
	} {
		if d := decide(t, e, "PrepareContainerRequest", prepare(with(src))); d.Allowed || !strings.Contains(d.Reason, "/logs") {
			t.Errorf("%s: allowed %v (%s)", src, d.Allowed, d.Reason)
		}
	}
	// A pod file the API server would refuse is refused here too.
	for _, sub := range []string{"../x", "/abs", "a/../../b"} {
		in, err := Load(bytes.NewReader([]byte(strings.Replace(subPathPod, "SUB", `"`+sub+`"`, 1))), "default")
		if err != nil {
			t.Fatal(err)
		}
		_, err = Generate(context.Background(), in, in.Workloads[0], Options{Images: testImages})
		if err == nil || !strings.Contains(err.Error(), "volumeMounts[1].subPath") {
			t.Errorf("subPath %q: %v", sub, err)
		}
	}
}
