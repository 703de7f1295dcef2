package genpolicy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/virtcontainers/policy/engine"
)

// podGen builds a pod spec from fuzz bytes: every choice the generator
// branches on (kinds, volume sources, env sources, security settings,
// $(VAR) references, names with odd characters) is driven by the input.
type podGen struct {
	b []byte
	i int
}

func (p *podGen) next() byte {
	if p.i >= len(p.b) {
		return 0
	}
	p.i++
	return p.b[p.i-1]
}

func (p *podGen) pick(list ...string) string { return list[int(p.next())%len(list)] }

func (p *podGen) str() string {
	return p.pick("a", "web", "$(A)", "$$(A)", "x-$(SECRET)-y", `quote"and\back`, "", "$(", "ünï", "KUBERNETES_PORT", "sh")
}

func (p *podGen) pod() map[string]any {
	kind := p.pick("Pod", "Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet", "ReplicaSet")
	vols := []any{}
	volNames := []string{}
	for n := int(p.next() % 4); n > 0; n-- {
		name := fmt.Sprintf("v%d", len(vols))
		v := map[string]any{"name": name}
		switch p.pick("emptyDir", "configMap", "secret", "projected", "downwardAPI", "hostPath", "pvc") {
		case "emptyDir":
			v["emptyDir"] = map[string]any{}
		case "configMap":
			v["configMap"] = map[string]any{"name": "cm"}
		case "secret":
			v["secret"] = map[string]any{"secretName": "s"}
		case "projected":
			v["projected"] = map[string]any{"sources": []any{}}
		case "downwardAPI":
			v["downwardAPI"] = map[string]any{"items": []any{}}
		case "hostPath":
			v["hostPath"] = map[string]any{"path": "/var/" + p.str()}
		default:
			v["persistentVolumeClaim"] = map[string]any{"claimName": "c"}
		}
		vols = append(vols, v)
		volNames = append(volNames, name)
	}
	containers := func(prefix string, n int) []any {
		out := []any{}
		for i := 0; i < n; i++ {
			c := map[string]any{"name": fmt.Sprintf("%s%d", prefix, i), "image": p.pick("busybox:1.36", "localhost/coco-test/busybox:latest")}
			if p.next()%2 == 0 {
				c["command"] = []string{p.str(), p.str()}
			}
			if p.next()%2 == 0 {
				c["args"] = []string{p.str()}
			}
			env := []any{}
			for k := int(p.next() % 4); k > 0; k-- {
				e := map[string]any{"name": p.pick("A", "B", "SECRET", "PATH", "HOSTNAME", "X_PORT")}
				switch p.next() % 5 {
				case 0:
					e["valueFrom"] = map[string]any{"secretKeyRef": map[string]any{"name": "s", "key": "k"}}
				case 1:
					e["valueFrom"] = map[string]any{"fieldRef": map[string]any{"fieldPath": p.pick("metadata.name", "status.podIP", "metadata.labels['app']", "spec.nodeName")}}
				case 2:
					e["valueFrom"] = map[string]any{"configMapKeyRef": map[string]any{"name": "cm", "key": p.pick("k", "missing"), "optional": true}}
				default:
					e["value"] = p.str()
				}
				env = append(env, e)
			}
			c["env"] = env
			if p.next()%3 == 0 {
				c["envFrom"] = []any{map[string]any{"configMapRef": map[string]any{"name": "cm"}, "prefix": p.pick("", "P_")}}
			}
			mounts := []any{}
			for _, v := range volNames {
				if p.next()%2 == 0 {
					m := map[string]any{"name": v, "mountPath": "/m/" + v, "readOnly": p.next()%2 == 0}
					if p.next()%4 == 0 {
						m["subPath"] = "sub"
					}
					mounts = append(mounts, m)
				}
			}
			c["volumeMounts"] = mounts
			if p.next()%2 == 0 {
				sc := map[string]any{"privileged": p.next()%5 == 0, "readOnlyRootFilesystem": p.next()%2 == 0,
					"allowPrivilegeEscalation": p.next()%2 == 0,
					"capabilities":             map[string]any{"add": []string{p.pick("NET_ADMIN", "ALL", "sys_time")}, "drop": []string{p.pick("ALL", "CHOWN", "KILL")}},
					"seccompProfile":           map[string]any{"type": p.pick("RuntimeDefault", "Unconfined", "Localhost")}}
				if p.next()%2 == 0 {
					sc["runAsUser"] = int(p.next())
				}
				c["securityContext"] = sc
			}
			if p.next()%2 == 0 {
				c["readinessProbe"] = map[string]any{"exec": map[string]any{"command": []string{"cat", p.str()}}}
			}
			c["tty"] = p.next()%4 == 0
			out = append(out, c)
		}
		return out
	}
	spec := map[string]any{
		"containers":         containers("c", 1+int(p.next()%3)),
		"initContainers":     containers("i", int(p.next()%2)),
		"volumes":            vols,
		"hostNetwork":        p.next()%6 == 0,
		"hostPID":            p.next()%6 == 0,
		"hostIPC":            p.next()%6 == 0,
		"enableServiceLinks": p.next()%2 == 0,
		"dnsPolicy":          p.pick("ClusterFirst", "None", "Default"),
		"securityContext": map[string]any{"sysctls": []any{map[string]any{"name": "net.core.somaxconn", "value": "1024"}},
			"fsGroup": 2000, "supplementalGroups": []int{int(p.next())}},
	}
	if p.next()%3 == 0 {
		spec["shareProcessNamespace"] = true
	}
	if p.next()%3 == 0 {
		spec["hostname"] = "h"
	}
	meta := map[string]any{"name": "w" + p.pick("", "-x", "name.with.dots"), "annotations": map[string]string{AllowExecAnnotation: p.pick("sh -c date", "bad 'quote", "")}}
	tmpl := map[string]any{"metadata": meta, "spec": spec}
	obj := map[string]any{"apiVersion": "v1", "kind": kind, "metadata": meta}
	switch kind {
	case "Pod":
		obj["spec"] = spec
	case "Job":
		obj["spec"] = map[string]any{"template": tmpl}
	case "CronJob":
		obj["spec"] = map[string]any{"schedule": "* * * * *", "jobTemplate": map[string]any{"spec": map[string]any{"template": tmpl}}}
	default:
		obj["spec"] = map[string]any{"template": tmpl, "selector": map[string]any{}}
	}
	return obj
}

const fuzzSideDocs = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {k: v, A: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: x}\n"

// FuzzGenerate: no generated pod makes the generator panic, and every policy
// it emits compiles and decides (with the real engine) without an error.
func FuzzGenerate(f *testing.F) {
	for _, seed := range []string{"", "\x00\x01\x02", "abcdefghijklmnopqrstuvwxyz0123456789", strings.Repeat("\xff", 64)} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		obj := (&podGen{b: data}).pod()
		js, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		// JSON is YAML; the side documents follow.
		in, err := Load(bytes.NewReader(append(js, []byte("\n"+fuzzSideDocs)...)), "default")
		if err != nil {
			return // an error naming what is wrong is a fine answer
		}
		for _, w := range in.Workloads {
			p, err := Generate(context.Background(), in, w, Options{Images: testImages, AllowExec: [][]string{{"x"}}})
			if err != nil {
				continue
			}
			e, err := engine.Compile(p.Rego)
			if err != nil {
				t.Fatalf("generated policy does not compile: %v", err)
			}
			for _, rule := range []string{"PrepareContainerRequest", "ExecProcessRequest", "SetupSandboxRequest"} {
				if _, err := e.Decide(context.Background(), rule, map[string]any{"spec": map[string]any{"annotations": map[string]any{
					"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.container-name": "c0"}}}); err != nil {
					t.Fatalf("%s: %v", rule, err)
				}
			}
			if _, err := InitData(p.Rego, "", "", ""); err != nil {
				t.Fatalf("init-data: %v", err)
			}
		}
	})
}

// FuzzLoad: arbitrary YAML never panics the loader or the generator.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: busybox:1.36}]}\n"))
	f.Add([]byte("kind: Deployment\nmetadata: {name: d}\nspec: {template: {spec: {containers: [{name: a, image: busybox:1.36, env: [{name: X, value: $(Y)}]}]}}}\n---\n"))
	f.Add([]byte("kind: CronJob\nmetadata: {name: c}\nspec: {jobTemplate: {spec: {template: {spec: {containers: []}}}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := Load(bytes.NewReader(data), "default")
		if err != nil {
			return
		}
		for _, w := range in.Workloads {
			Generate(context.Background(), in, w, Options{Images: testImages})
		}
		ann := map[*Workload]string{}
		for _, w := range in.Workloads {
			ann[w] = "x"
		}
		Inject(data, in, "k", ann)
	})
}
