package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/coco-runtime/coco/guest-assets/agent/policyproc/server"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

// The test binary doubles as coco-policy (the guest's engine process).
func TestMain(m *testing.M) {
	if os.Getenv("POLICY_TEST_ENGINE") == "1" {
		if err := server.Serve(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func engineArg(t *testing.T) string {
	t.Setenv("POLICY_TEST_ENGINE", "1")
	return os.Args[0]
}

// testLayout writes an OCI layout holding a busybox-like image named name.
func testLayout(t *testing.T, name string) string {
	t.Helper()
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "amd64",
		Config: v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"io.containerd.image.name": name})); err != nil {
		t.Fatal(err)
	}
	return dir
}

const podYAML = `# keep this comment
apiVersion: v1
kind: Pod
metadata:
  name: demo
  labels: {app: demo}   # flow style is fine outside annotations
spec:
  containers:
  - name: app
    image: localhost/coco-test/busybox:latest
    args: ["sleep", "1000"]
    readinessProbe:
      exec:
        command: ["cat", "/etc/hostname"]
`

func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestGenerateInjectAndCheck(t *testing.T) {
	eng := engineArg(t)
	dir := t.TempDir()
	yml := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(yml, []byte(podYAML), 0o640); err != nil {
		t.Fatal(err)
	}
	lay := testLayout(t, "localhost/coco-test/busybox:latest")
	toml := filepath.Join(dir, "initdata.toml")
	aa := filepath.Join(dir, "aa.toml")
	os.WriteFile(aa, []byte("[token_configs.kbs]\nurl = \"http://kbs:8080\"\n"), 0o600)

	out, errs, code := run(t, "generate", "-f", yml, "--image-layout", lay, "--engine", eng, "-o", toml, "--aa-toml", aa, "--allow-exec", "sh -c 'date -u'")
	if code != 0 {
		t.Fatalf("generate: %d %s", code, errs)
	}
	if !strings.HasPrefix(strings.Split(out, "\n")[1], initdata.AnnotationKey+": ") {
		t.Fatalf("generate printed %q", out)
	}
	raw, err := os.ReadFile(toml)
	if err != nil {
		t.Fatal(err)
	}
	id, err := initdata.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := id.Get(initdata.KeyAA); !strings.Contains(v, "kbs:8080") {
		t.Fatalf("aa.toml not passed through: %q", v)
	}
	rego, _ := id.Get(initdata.KeyPolicy)
	if !strings.Contains(rego, `"date -u"`) || !strings.Contains(rego, `"/etc/hostname"`) {
		t.Fatalf("exec list lacks the flag's or the probe's command")
	}

	// --inject changes only the annotation.
	if _, errs, code := run(t, "generate", "-f", yml, "--image-layout", lay, "--engine", eng, "--inject"); code != 0 {
		t.Fatalf("inject: %s", errs)
	}
	got, _ := os.ReadFile(yml)
	st, _ := os.Stat(yml)
	if st.Mode().Perm() != 0o640 {
		t.Errorf("inject changed the file mode to %v", st.Mode())
	}
	lines := strings.Split(string(got), "\n")
	if len(lines) != len(strings.Split(podYAML, "\n"))+2 || lines[4] != "  annotations:" || !strings.HasPrefix(lines[5], "    \""+initdata.AnnotationKey+"\": \"") {
		t.Fatalf("inject wrote:\n%s", got)
	}
	if strings.Join(append(lines[:4:4], lines[6:]...), "\n") != podYAML {
		t.Fatalf("inject changed more than the annotation:\n%s", got)
	}
	// A second run replaces the value in place.
	if _, errs, code := run(t, "generate", "-f", yml, "--image-layout", lay, "--engine", eng, "--inject", "--allow-logs"); code != 0 {
		t.Fatalf("inject again: %s", errs)
	}
	again, _ := os.ReadFile(yml)
	if len(strings.Split(string(again), "\n")) != len(lines) || string(again) == string(got) {
		t.Fatalf("second inject did not replace the value:\n%s", again)
	}

	// check: an exec the probe allows; one it does not, with the reason.
	proc := map[string]any{"args": []string{"sleep", "1000"}, "cwd": "/", "user": map[string]any{"uid": 0, "gid": 0}}
	for _, c := range []struct {
		argv []string
		code int
		want string
	}{
		{[]string{"cat", "/etc/hostname"}, 0, "allowed"},
		{[]string{"sh", "-c", "date -u"}, 0, "allowed"},
		{[]string{"cat", "/etc/shadow"}, 1, `exec: ["cat", "/etc/shadow"] is not allowed in ["app"]`},
	} {
		spec := map[string]any{"args": c.argv, "cwd": "/", "user": map[string]any{"uid": 0, "gid": 0}}
		req, _ := json.Marshal(map[string]any{"rule": "ExecProcessRequest", "input": map[string]any{"id": "c1", "exec_id": "e1", "spec": spec, "container_process": proc}})
		rf := filepath.Join(dir, "req.json")
		os.WriteFile(rf, req, 0o600)
		out, errs, code := run(t, "check", "--policy", toml, "--request", rf, "--engine", eng)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("check %v: code %d, out %q, err %q; want %d %q", c.argv, code, out, errs, c.code, c.want)
		}
	}
}

func TestCheckProtoRequest(t *testing.T) {
	eng := engineArg(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.rego")
	os.WriteFile(pol, []byte("package agent_policy\nimport rego.v1\ndefault KillRequest := false\nKillRequest if input.signal == 15\nreasons.KillRequest contains sprintf(\"signal %d\", [input.signal])\n"), 0o600)
	for sig, want := range map[int]string{15: "allowed", 9: "denied: Kill denied by agent policy (rule agent_policy.KillRequest): signal 9"} {
		rf := filepath.Join(dir, "r.json")
		os.WriteFile(rf, []byte(fmt.Sprintf(`{"type": "containerd.task.v3.KillRequest", "request": {"id": "c1", "signal": %d}}`, sig)), 0o600)
		out, errs, _ := run(t, "check", "--policy", pol, "--request", rf, "--engine", eng)
		if !strings.HasPrefix(out, want) {
			t.Errorf("signal %d: %q %q, want %q", sig, out, errs, want)
		}
	}
}

func TestInputSchema(t *testing.T) {
	out, _, code := run(t, "input-schema")
	if code != 0 || !strings.Contains(out, "PrepareContainerRequest") || !strings.Contains(out, "## Denial reasons") {
		t.Fatalf("input-schema: %d %q", code, out)
	}
}

func TestGenerateErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ yaml, want string }{
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: x\n    imagePullPolicy: Always\n    bogusField: 1\n", `unknown field "bogusField"`},
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  dnsPolicy: None\n  ephemeralContainers: [{name: d, image: x}]\n  containers: [{name: a, image: x}]\n", "spec.ephemeralContainers: not supported"},
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: x, envFrom: [{configMapRef: {name: cm}}]}]\n", `ConfigMap "cm" is not in the input`},
	} {
		f := filepath.Join(dir, "p.yaml")
		os.WriteFile(f, []byte(c.yaml), 0o600)
		_, errs, code := run(t, "generate", "-f", f, "--image-layout", testLayout(t, "x"))
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("%q: code %d, %q; want %q", c.yaml, code, errs, c.want)
		}
	}
}
