package genpolicy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/virtcontainers/policy/engine"
)

// staticImages serves image configs from a map (no registry in unit tests).
type staticImages map[string]*ImageConfig

func (s staticImages) Config(_ context.Context, ref string) (*ImageConfig, error) {
	if c, ok := s[ref]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("image %q: unknown", ref)
}

var testImages = staticImages{
	"localhost/coco-test/busybox:latest": {Cmd: []string{"sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, Digest: "sha256:" + strings.Repeat("ab", 32)},
	"busybox:1.36":                       {Cmd: []string{"sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, Digest: "sha256:" + strings.Repeat("cd", 32)},
}

func generateFile(t *testing.T, file string, o Options) *Policy {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	in, err := Load(bytes.NewReader(src), "default")
	if err != nil {
		t.Fatal(err)
	}
	if o.Images == nil {
		o.Images = testImages
	}
	p, err := Generate(context.Background(), in, in.Workloads[0], o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func compile(t *testing.T, rego string) *engine.Engine {
	t.Helper()
	e, err := engine.Compile(rego)
	if err != nil {
		t.Fatalf("generated policy does not compile: %v\n%s", err, rego)
	}
	return e
}

// decide evaluates rule against input (round-tripped through JSON as the
// agent's input is) and returns the decision.
func decide(t *testing.T, e *engine.Engine, rule string, input any) engine.Decision {
	t.Helper()
	js, err := json.Marshal(input)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	dec, err := e.Decide(context.Background(), rule, v)
	if err != nil {
		t.Fatal(err)
	}
	return dec
}

var defaultCapsJSON = func() []any {
	out := []any{}
	for _, c := range defaultCaps {
		out = append(out, c)
	}
	return out
}()

// sidecarSpec is the spec containerd's CRI writes for the sidecar of
// testdata/app.yaml (shaped after a real one; see the integration test for
// the real thing).
func sidecarSpec() map[string]any {
	root := "/var/lib/kubelet/pods/0f1e2d3c-aaaa-bbbb-cccc-111122223333/"
	sb := "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/" + strings.Repeat("a1", 32) + "/"
	bind := func(dst, src string, ro bool) map[string]any {
		o := []any{"rbind", "rprivate", "rw"}
		if ro {
			o = []any{"rbind", "rprivate", "ro"}
		}
		return map[string]any{"destination": dst, "type": "bind", "source": src, "options": o}
	}
	return map[string]any{
		"ociVersion": "1.2.1",
		"process": map[string]any{
			"user": map[string]any{"uid": 1000, "gid": 1000, "additionalGids": []any{1000, 2000}},
			"args": []any{"sleep", "1000"},
			"env": []any{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=web-7d9f8b6c5d-x2x9k",
				"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_PORT=tcp://10.96.0.1:443"},
			"cwd":          "/",
			"capabilities": map[string]any{"bounding": defaultCapsJSON, "effective": defaultCapsJSON, "permitted": defaultCapsJSON},
		},
		"root": map[string]any{"path": "rootfs"},
		"mounts": []any{
			map[string]any{"destination": "/proc", "type": "proc", "source": "proc", "options": []any{"nosuid", "noexec", "nodev"}},
			map[string]any{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []any{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			map[string]any{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": []any{"nosuid", "noexec", "nodev", "ro"}},
			map[string]any{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": []any{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			bind("/work", root+"volumes/kubernetes.io~empty-dir/work", true),
			bind("/etc/hosts", root+"etc-hosts", false),
			bind("/dev/termination-log", root+"containers/sidecar/5c2a9e11", false),
			bind("/var/run/secrets/kubernetes.io/serviceaccount", root+"volumes/kubernetes.io~projected/kube-api-access-8x7kq", true),
			bind("/etc/hostname", sb+"hostname", false),
			bind("/etc/resolv.conf", sb+"resolv.conf", false),
			bind("/dev/shm", "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/"+strings.Repeat("a1", 32)+"/shm", false),
		},
		"annotations": map[string]any{
			"io.kubernetes.cri.container-type":    "container",
			"io.kubernetes.cri.container-name":    "sidecar",
			"io.kubernetes.cri.sandbox-name":      "web-7d9f8b6c5d-x2x9k",
			"io.kubernetes.cri.sandbox-namespace": "shop",
			"io.kubernetes.cri.image-name":        "localhost/coco-test/busybox:latest",
		},
		"linux": map[string]any{
			"resources":     map[string]any{"devices": []any{map[string]any{"allow": false, "access": "rwm"}}},
			"namespaces":    []any{map[string]any{"type": "pid"}, map[string]any{"type": "ipc", "path": "/proc/42/ns/ipc"}, map[string]any{"type": "uts", "path": "/proc/42/ns/uts"}, map[string]any{"type": "mount"}, map[string]any{"type": "network", "path": "/var/run/netns/cni-1"}, map[string]any{"type": "cgroup"}},
			"maskedPaths":   []any{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"},
			"readonlyPaths": []any{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

func prepare(spec map[string]any) map[string]any {
	return map[string]any{"container_id": "c1", "spec": spec}
}

func TestGeneratedPolicyAllowsAndExplains(t *testing.T) {
	p := generateFile(t, "testdata/app.yaml", Options{})
	e := compile(t, p.Rego)
	if d := decide(t, e, "PrepareContainerRequest", prepare(sidecarSpec())); !d.Allowed {
		t.Fatalf("the sidecar as containerd writes it is denied: %s", d.Reason)
	}
	cases := []struct {
		name   string
		mutate func(s map[string]any)
		want   string
	}{
		{"arg", func(s map[string]any) { s["process"].(map[string]any)["args"] = []any{"sleep", "1"} }, `containers[sidecar].args: received ["sleep", "1"], expected ["sleep", "1000"]`},
		{"env", func(s map[string]any) {
			p := s["process"].(map[string]any)
			p["env"] = append(p["env"].([]any), "DEBUG=1")
		}, `containers[sidecar].env: "DEBUG" (value sha256:`},
		{"env value", func(s map[string]any) {
			p := s["process"].(map[string]any)
			p["env"].([]any)[0] = "PATH=/evil"
		}, `containers[sidecar].env: "PATH" has value sha256:`},
		{"image", func(s map[string]any) {
			s["annotations"].(map[string]any)["io.kubernetes.cri.image-name"] = "evil:latest"
		}, `containers[sidecar].image: received "evil:latest"`},
		{"user", func(s map[string]any) {
			s["process"].(map[string]any)["user"] = map[string]any{"uid": 0, "gid": 1000}
		}, `containers[sidecar].user.uid: received 0, expected 1000`},
		{"capability", func(s map[string]any) {
			c := s["process"].(map[string]any)["capabilities"].(map[string]any)
			c["bounding"] = append(defaultCapsJSON[:len(defaultCapsJSON):len(defaultCapsJSON)], "CAP_SYS_ADMIN")
		}, `containers[sidecar].capabilities: CAP_SYS_ADMIN not allowed`},
		{"privileged", func(s map[string]any) {
			s["linux"].(map[string]any)["maskedPaths"] = []any{}
		}, `containers[sidecar].privileged`},
		{"namespace", func(s map[string]any) {
			l := s["linux"].(map[string]any)
			l["namespaces"] = l["namespaces"].([]any)[1:] // no pid namespace: the VM's
		}, `containers[sidecar].namespaces.pid: expected new`},
		{"mount destination", func(s map[string]any) {
			m := s["mounts"].([]any)
			w := m[4].(map[string]any)
			m[4] = map[string]any{"destination": "/etc/passwd", "type": "bind", "source": w["source"], "options": w["options"]}
		}, `containers[sidecar].mounts[/etc/passwd]: bind of`},
		{"mount over the token", func(s map[string]any) {
			m := s["mounts"].([]any)
			m[7].(map[string]any)["source"] = "/var/lib/kubelet/pods/x/volumes/kubernetes.io~empty-dir/work"
		}, `containers[sidecar].mounts[/var/run/secrets/kubernetes.io/serviceaccount]`},
		{"unknown container", func(s map[string]any) {
			s["annotations"].(map[string]any)["io.kubernetes.cri.container-name"] = "intruder"
		}, `container "intruder" of type "container" is not in the pod`},
		{"namespace of the pod", func(s map[string]any) {
			s["annotations"].(map[string]any)["io.kubernetes.cri.sandbox-namespace"] = "default"
		}, `pod.namespace: received "default", expected "shop"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := sidecarSpec()
			c.mutate(s)
			d := decide(t, e, "PrepareContainerRequest", prepare(s))
			if d.Allowed {
				t.Fatal("allowed")
			}
			if !strings.Contains(d.Reason, c.want) {
				t.Fatalf("reason %q lacks %q", d.Reason, c.want)
			}
			if strings.Contains(d.Reason, "/evil") {
				t.Fatalf("reason %q shows an env value", d.Reason)
			}
		})
	}
}

func TestExecSources(t *testing.T) {
	src := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    " + AllowExecAnnotation + ": |\n      sh -c 'date -u'\n\n      ls /data\nspec:\n  containers:\n  - name: a\n    image: busybox:1.36\n    args: [sleep, '1']\n    livenessProbe: {exec: {command: [cat, /live]}}\n    lifecycle: {preStop: {exec: {command: [kill, '1']}}}\n  - name: b\n    image: busybox:1.36\n    args: [sleep, '2']\n"
	in, err := Load(strings.NewReader(src), "default")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Generate(context.Background(), in, in.Workloads[0], Options{Images: testImages, AllowExec: [][]string{{"id"}}})
	if err != nil {
		t.Fatal(err)
	}
	e := compile(t, p.Rego)
	proc := func(args ...string) map[string]any { return map[string]any{"args": args, "cwd": "/"} }
	for _, c := range []struct {
		container []string
		argv      []string
		allowed   bool
	}{
		{[]string{"sleep", "1"}, []string{"cat", "/live"}, true},        // a's probe
		{[]string{"sleep", "1"}, []string{"kill", "1"}, true},           // a's hook
		{[]string{"sleep", "2"}, []string{"cat", "/live"}, false},       // not b's
		{[]string{"sleep", "2"}, []string{"sh", "-c", "date -u"}, true}, // annotation, every container
		{[]string{"sleep", "2"}, []string{"ls", "/data"}, true},         // annotation, second line
		{[]string{"sleep", "1"}, []string{"id"}, true},                  // --allow-exec
		{[]string{"sleep", "3"}, []string{"id"}, false},                 // no such container
	} {
		in := map[string]any{"id": "x", "exec_id": "e", "spec": proc(c.argv...), "container_process": proc(c.container...)}
		if d := decide(t, e, "ExecProcessRequest", in); d.Allowed != c.allowed {
			t.Errorf("exec %v in %v: allowed %v (%s), want %v", c.argv, c.container, d.Allowed, d.Reason, c.allowed)
		}
	}
	// --allow-all-exec says so loudly in the policy.
	p, _ = Generate(context.Background(), in, in.Workloads[0], Options{Images: testImages, AllowAllExec: true})
	if !strings.Contains(p.Rego, "WARNING: ALLOW-ALL-EXEC") {
		t.Error("--allow-all-exec is not named in the policy")
	}
	if d := decide(t, compile(t, p.Rego), "ExecProcessRequest", map[string]any{"spec": proc("rm", "-rf", "/"), "container_process": proc("sleep", "9")}); !d.Allowed {
		t.Errorf("--allow-all-exec denied: %s", d.Reason)
	}
}

func TestCapabilitiesMissingIsExplained(t *testing.T) {
	e := compile(t, generateFile(t, "testdata/app.yaml", Options{}).Rego)
	s := sidecarSpec()
	delete(s["process"].(map[string]any), "capabilities")
	d := decide(t, e, "PrepareContainerRequest", prepare(s))
	if d.Allowed || !strings.Contains(d.Reason, "containers[sidecar].capabilities: missing") {
		t.Fatalf("%+v", d)
	}
}
