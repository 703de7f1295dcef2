package genpolicy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// imageVolumePod is app.yaml's sidecar alone, with an image volume mounted
// whole and a subPath of it.
const imageVolumePod = `apiVersion: apps/v1
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
        - {name: tools, mountPath: /tools}
        - {name: tools, mountPath: /bin2, subPath: bin}
      volumes:
      - {name: work, emptyDir: {}}
      - {name: tools, image: {reference: "localhost/coco-test/busybox:latest", pullPolicy: IfNotPresent}}
`

// An image volume: its read-only bind from containerd's image-volumes
// directory is allowed with the disk the shim sends for it; a disk for any
// other mount, an image volume without its disk (an empty directory in the
// guest) and a writable bind are each denied, naming the mount.
func TestGeneratedPolicyImageVolume(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(file, []byte(imageVolumePod), 0o644); err != nil {
		t.Fatal(err)
	}
	e := compile(t, generateFile(t, file, Options{}).Rego)
	vols := "/run/containerd/io.containerd.grpc.v1.cri/image-volumes/" + strings.Repeat("a1", 32) + "/" + strings.Repeat("0f", 32)
	input := func(opt string, disks ...string) map[string]any {
		s := sidecarSpec()
		s["mounts"] = append(s["mounts"].([]any),
			map[string]any{"destination": "/tools", "type": "bind", "source": vols, "options": []any{"rbind", "rprivate", opt}},
			map[string]any{"destination": "/bin2", "type": "bind", "source": vols + "/bin", "options": []any{"rbind", "rprivate", "ro"}})
		in := prepare(s)
		var dv []any
		for i, d := range disks {
			dv = append(dv, map[string]any{"serial": "v000000000000000000" + string(rune('0'+i)), "destination": d, "fstype": "erofs"})
		}
		if dv != nil {
			in["disk_volumes"] = dv
		}
		return in
	}
	if d := decide(t, e, "PrepareContainerRequest", input("ro", "/tools", "/bin2")); !d.Allowed {
		t.Fatalf("image volume with its disks denied: %s", d.Reason)
	}
	for _, c := range []struct {
		name string
		in   map[string]any
		want string
	}{
		{"no disk", input("ro", "/bin2"), "containers[sidecar].mounts[/tools]: image volume tools comes without its disk"},
		{"disk for an emptyDir", input("ro", "/tools", "/work"), "containers[sidecar].disk_volumes[/work]"},
		{"writable", input("rw", "/tools"), "containers[sidecar].mounts[/tools]"},
	} {
		if d := decide(t, e, "PrepareContainerRequest", c.in); d.Allowed || !strings.Contains(d.Reason, c.want) {
			t.Errorf("%s: allowed %v, reason %q; want %q", c.name, d.Allowed, d.Reason, c.want)
		}
	}
}
