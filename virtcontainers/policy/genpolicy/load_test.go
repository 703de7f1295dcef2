package genpolicy

import (
	"context"
	"regexp"
	"strings"
	"testing"
)

const containersYAML = `      containers:
      - name: app
        image: busybox:1.36
        args: ["sleep", "1"]
`

// Every workload kind: its pod template is found, the pod name pattern
// matches the names its controller gives, and --inject puts the annotation
// on the pod template without touching anything else.
func TestKindsAndInject(t *testing.T) {
	tmpl := "  template:\n    metadata:\n      labels: {app: x}\n    spec:\n" + containersYAML
	for _, c := range []struct {
		kind, doc, podName string
	}{
		{"Pod", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n" + strings.ReplaceAll(containersYAML, "      ", "  "), "x"},
		{"Deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: x}}\n" + tmpl, "x-7d9f8b6c5d-x2x9k"},
		{"ReplicaSet", "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: x\nspec:\n" + tmpl, "x-b2x9k"},
		{"DaemonSet", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: x\nspec:\n  updateStrategy: {type: RollingUpdate}\n" + tmpl, "x-qq7z2"},
		{"StatefulSet", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: x\nspec:\n  serviceName: x\n  volumeClaimTemplates: []\n" + tmpl, "x-12"},
		{"Job", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: x\nspec:\n  backoffLimit: 2\n" + tmpl, "x-abcde"},
		{"CronJob", "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: x\nspec:\n  schedule: '*/5 * * * *'\n  jobTemplate:\n    spec:\n" + indent4(tmpl), "x-28912345-k8s2p"},
	} {
		t.Run(c.kind, func(t *testing.T) {
			src := "# leading comment\n" + c.doc + "---\napiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}]}\n"
			in, err := Load(strings.NewReader(src), "default")
			if err != nil {
				t.Fatal(err)
			}
			if len(in.Workloads) != 1 || in.Workloads[0].Kind != c.kind || len(in.Skipped) != 1 {
				t.Fatalf("workloads %v skipped %v", in.Workloads, in.Skipped)
			}
			w := in.Workloads[0]
			if m := w.PodName; m.Exact != c.podName && (m.Regex == "" || !regexp.MustCompile(m.Regex).MatchString(c.podName)) {
				t.Errorf("pod name %q does not match %+v", c.podName, m)
			}
			if _, err := Generate(context.Background(), in, w, Options{Images: testImages}); err != nil {
				t.Fatal(err)
			}
			out, err := Inject([]byte(src), in, "io.example/k", map[*Workload]string{w: "VALUE"})
			if err != nil {
				t.Fatal(err)
			}
			in2, err := Load(strings.NewReader(string(out)), "default")
			if err != nil {
				t.Fatalf("injected YAML does not load: %v\n%s", err, out)
			}
			if got := in2.Workloads[0].meta.Annotations["io.example/k"]; got != "VALUE" {
				t.Fatalf("annotation on the pod template = %q:\n%s", got, out)
			}
			if removeLines(string(out), `"io.example/k": "VALUE"`, "annotations:") != removeLines(src, "annotations:") {
				t.Fatalf("inject changed more than the annotation:\n%s", out)
			}
		})
	}
}

func indent4(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i := range lines {
		lines[i] = "    " + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

func removeLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		keep := true
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				keep = false
			}
		}
		if keep {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestInjectCases(t *testing.T) {
	pod := func(meta string) string {
		return "apiVersion: v1\nkind: Pod\n" + meta + "spec:\n  containers:\n  - {name: a, image: busybox:1.36}\n"
	}
	for _, c := range []struct{ name, src, want, err string }{
		{"annotations exist", pod("metadata:\n  name: p\n  annotations:\n    other: x\n"), "  annotations:\n    \"k\": \"V\"\n    other: x\n", ""},
		{"value replaced", pod("metadata:\n  name: p\n  annotations:\n    k: old # comment\n"), "    k: \"V\"\n", ""},
		{"no annotations", pod("metadata:\n  name: p\n"), "metadata:\n  annotations:\n    \"k\": \"V\"\n  name: p\n", ""},
		{"flow annotations", pod("metadata:\n  name: p\n  annotations: {other: x}\n"), "", "flow style"},
		{"flow metadata", pod("metadata: {name: p}\n"), "", "flow style"},
		{"template without metadata", "kind: Deployment\nmetadata:\n  name: d\nspec:\n  template:\n    spec:\n      containers:\n      - {name: a, image: busybox:1.36}\n",
			"  template:\n    metadata:\n      annotations:\n        \"k\": \"V\"\n    spec:\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			in, err := Load(strings.NewReader(c.src), "default")
			if err != nil {
				t.Fatal(err)
			}
			out, err := Inject([]byte(c.src), in, "k", map[*Workload]string{in.Workloads[0]: "V"})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("out:\n%s\nerr %v; want it to contain:\n%s", out, err, c.want)
			}
		})
	}
}

func TestLoadErrorsNameTheField(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x, imagePullPolicy: Always, livenessProbe: {exec: {command: [x]}, periodSecondz: 3}}]}\n", `unknown field "periodSecondz"`},
		{"kind: Deployment\nmetadata: {name: d}\nspec: {template: {spec: {containers: [{name: a, image: x}]}}, replicaz: 1}\n", `unknown field "replicaz"`},
		{"kind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n", "at least one container"},
		{"kind: Pod\nspec: {containers: [{name: a, image: x}]}\n", "metadata.name: missing"},
		{"kind: Service\nmetadata: {name: s}\n", "no Pod, Deployment"},
		{"kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: x}]}\n---\n- not an object\n", "document 2"},
	} {
		if _, err := Load(strings.NewReader(c.src), "default"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want %q", c.src, err, c.want)
		}
	}
	// Fields the generator cannot pin are refused by name.
	for _, c := range []struct{ spec, want string }{
		{"{containers: [{name: a, image: busybox:1.36, volumeDevices: [{name: v, devicePath: /dev/x}]}]}", `containers[a].volumeDevices[0].name: no volume "v"`},
		{"{volumes: [{name: v, nfs: {server: s, path: /}}], containers: [{name: a, image: busybox:1.36, volumeMounts: [{name: v, mountPath: /v}]}]}", "volumes[v].nfs: not supported"},
		{"{setHostnameAsFQDN: true, containers: [{name: a, image: busybox:1.36}]}", "spec.setHostnameAsFQDN"},
		{"{containers: [{name: a, image: busybox:1.36, volumeMounts: [{name: nope, mountPath: /v}]}]}", `no volume "nope"`},
		{"{containers: [{name: a, image: busybox:1.36, env: [{name: X, valueFrom: {fieldRef: {fieldPath: spec.bogus}}}]}]}", `"spec.bogus" is not a field`},
		{"{containers: [{name: a, image: nosuch:1}]}", `image "nosuch:1"`},
	} {
		in, err := Load(strings.NewReader("kind: Pod\nmetadata: {name: p}\nspec: "+c.spec+"\n"), "default")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Generate(context.Background(), in, in.Workloads[0], Options{Images: testImages}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.spec, err, c.want)
		}
	}
}
