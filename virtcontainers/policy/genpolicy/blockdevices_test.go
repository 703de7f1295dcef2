package genpolicy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// blockDevicePod is app.yaml's sidecar alone, with a block claim as
// /dev/xvdb.
const blockDevicePod = `apiVersion: apps/v1
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
        volumeDevices:
        - {name: data, devicePath: /dev/xvdb}
      volumes:
      - {name: work, emptyDir: {}}
      - {name: data, persistentVolumeClaim: {claimName: data}}
`

// A volumeDevices entry: its block device node, the device cgroup rule
// containerd adds for it and its block_volumes disk are allowed; a device
// at another path, a character device, a rule for another device and a
// disk for an undeclared path are denied.
func TestGeneratedPolicyBlockDevice(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(file, []byte(blockDevicePod), 0o644); err != nil {
		t.Fatal(err)
	}
	e := compile(t, generateFile(t, file, Options{}).Rego)
	input := func(devPath, devType string, ruleMinor int, disk string) map[string]any {
		s := sidecarSpec()
		l := s["linux"].(map[string]any)
		l["devices"] = []any{map[string]any{"path": devPath, "type": devType, "major": 7, "minor": 0, "fileMode": 432, "uid": 0, "gid": 6}}
		r := l["resources"].(map[string]any)
		r["devices"] = append(r["devices"].([]any), map[string]any{"allow": true, "type": devType, "major": 7, "minor": ruleMinor, "access": "rwm"})
		in := prepare(s)
		in["block_volumes"] = []any{map[string]any{"serial": "b0000000000000000000", "path": disk}}
		return in
	}
	if d := decide(t, e, "PrepareContainerRequest", input("/dev/xvdb", "b", 0, "/dev/xvdb")); !d.Allowed {
		t.Fatalf("the declared block device denied: %s", d.Reason)
	}
	for _, c := range []struct {
		name string
		in   map[string]any
		want string
	}{
		{"other path", input("/dev/sda", "b", 0, "/dev/xvdb"), "containers[sidecar].privileged"},
		{"char device", input("/dev/xvdb", "c", 0, "/dev/xvdb"), "containers[sidecar].privileged"},
		{"rule for another device", input("/dev/xvdb", "b", 1, "/dev/xvdb"), "containers[sidecar].privileged"},
		{"undeclared disk", input("/dev/xvdb", "b", 0, "/dev/sda"), "containers[sidecar].block_volumes[/dev/sda]"},
	} {
		if d := decide(t, e, "PrepareContainerRequest", c.in); d.Allowed || !strings.Contains(d.Reason, c.want) {
			t.Errorf("%s: allowed %v, reason %q; want %q", c.name, d.Allowed, d.Reason, c.want)
		}
	}
}

// A volumeDevices entry that names no block claim, or an unclean path, is
// refused by name.
func TestBlockDeviceRefusals(t *testing.T) {
	for old, want := range map[string]string{
		"{name: data, devicePath: /dev/xvdb}": "",
		"{name: work, devicePath: /dev/xvdb}": "volumeDevices[0].name: volume \"work\" is not a persistentVolumeClaim",
		"{name: data, devicePath: dev/xvdb}":  "volumeDevices[0].devicePath",
		"{name: data, devicePath: /dev/../x}": "volumeDevices[0].devicePath",
	} {
		in, err := Load(strings.NewReader(strings.Replace(blockDevicePod, "{name: data, devicePath: /dev/xvdb}", old, 1)), "default")
		if err != nil {
			t.Fatal(err)
		}
		_, err = Generate(context.Background(), in, in.Workloads[0], Options{Images: testImages})
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: err = %v, want %q", old, err, want)
		}
	}
}
