package service

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/coco-runtime/coco/configs/policies"
	"github.com/coco-runtime/coco/guest-assets/agent/container"
	"github.com/coco-runtime/coco/guest-assets/agent/policy"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	vcpolicy "github.com/coco-runtime/coco/virtcontainers/policy"
	"github.com/coco-runtime/coco/virtcontainers/policy/engine"
	"github.com/coco-runtime/coco/virtcontainers/policy/policytest"
)

// The hostile-host tests of the guest's policy path: a real agent over a
// socket, the real policy engine (OPA, in process here rather than in
// coco-policy), the shipped default TEE policy or an owner's copy of it.

// regoPolicy is a compiled Rego policy as the agent's Policy, built the
// way coco-policy builds it.
type regoPolicy struct{ e *engine.Engine }

func (p regoPolicy) Evaluate(ctx context.Context, method string, req proto.Message) error {
	in, err := vcpolicy.Input(ctx, req)
	if err != nil {
		return err
	}
	return p.e.Check(ctx, method, vcpolicy.RuleName(req), in)
}

// startPolicy starts an agent under the Rego policy src with the sandbox
// set up.
func startPolicy(t *testing.T, src string) (*harness, context.Context) {
	t.Helper()
	e, err := engine.Compile(src)
	if err != nil {
		t.Fatal(err)
	}
	h := startWith(t, func(c *Config) { c.Policy = regoPolicy{e} })
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	if _, err := h.client.Agent().SetupSandbox(ctx, &api.SetupSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	return h, ctx
}

// ownerExecPolicy is the default TEE policy with exec of `cat /etc/hostname`
// allowed, and `ls <flag> /tmp` in the regex form.
func ownerExecPolicy() string {
	src := strings.Replace(policies.DefaultTEE, `allowed_exec_argv := []`, `allowed_exec_argv := [["cat", "/etc/hostname"]]`, 1)
	return strings.Replace(src, `allowed_exec_regex := []`, `allowed_exec_regex := [["ls", "-l|-a", "/tmp"]]`, 1)
}

func execAny(doc []byte) *anypb.Any {
	return &anypb.Any{TypeUrl: vcpolicy.ProcessTypeURL, Value: doc}
}

// prepareC1 prepares container c1 with process p. It is the sandbox
// container, whose rootfs the agent provides, so that no disk is needed.
func prepareC1(t *testing.T, h *harness, ctx context.Context, p *specs.Process) {
	t.Helper()
	s := policytest.CRISpec()
	s.Process = p
	r := policytest.Prepare(t, s)
	r.SandboxContainer = true
	r.Rootfs = &api.Rootfs{Source: &api.Rootfs_Agent{Agent: &emptypb.Empty{}}}
	if _, err := h.client.Agent().PrepareContainer(ctx, r); err != nil {
		t.Fatal(err)
	}
}

// Attack 1: the policy and the runtime read different JSON. Each document
// is refused before any policy sees it, with the field named.
func TestHostileJSONIsRefused(t *testing.T) {
	// An owner rule that a document read as something else would satisfy:
	// anything but a shell may run.
	negative := "package agent_policy\n\nimport rego.v1\n\n" +
		"HealthRequest := true\nSetupSandboxRequest := true\nPrepareContainerRequest := true\nUpdateTaskRequest := true\n" +
		"ExecProcessRequest if not input.spec.args[0] in {\"sh\", \"bash\"}\n"
	h, ctx := startPolicy(t, negative)
	for _, tc := range []struct {
		name string
		doc  string
		want string
	}{
		{"case variant", `{"args":["cat","/etc/hostname"],"Args":["sh","-c","cat /secret"],"cwd":"/"}`, `spec.Args: unknown field; keys are case-sensitive: write "args"`},
		{"duplicate key", `{"args":["cat","/etc/hostname"],"args":["sh","-c","cat /secret"],"cwd":"/"}`, "spec.args: key appears twice"},
		{"leading space", ` {"args":["sh","-c","cat /secret"],"cwd":"/"}`, "spec: want a JSON object starting with '{' (no leading whitespace)"},
		{"trailing document", `{"args":["cat"],"cwd":"/"}{"args":["sh"]}`, "spec: 15 bytes after the JSON object"},
		{"not an object", `"sh -c id"`, "spec: want a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.Task().Exec(ctx, &task.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: execAny([]byte(tc.doc))})
			wantErr(t, err, errdefs.IsInvalidArgument, "Exec: "+tc.want)
		})
	}
	// Read as the runtime reads it, the same shell is denied.
	_, err := h.client.Task().Exec(ctx, &task.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: execAny([]byte(`{"args":["sh","-c","cat /secret"],"cwd":"/"}`))})
	wantErr(t, err, errdefs.IsPermissionDenied, "Exec denied by agent policy (rule agent_policy.ExecProcessRequest)")

	_, err = h.client.Agent().PrepareContainer(ctx, &api.PrepareContainerRequest{ContainerId: "c2",
		Spec:   []byte(`{"process":{"args":["true"],"cwd":"/","Capabilities":{"bounding":["CAP_SYS_ADMIN"]}},"linux":{}}`),
		Rootfs: &api.Rootfs{Source: &api.Rootfs_Agent{Agent: &emptypb.Empty{}}}, SandboxContainer: true})
	wantErr(t, err, errdefs.IsInvalidArgument, "PrepareContainer: spec.process.Capabilities: unknown field")
	_, err = h.client.Task().Update(ctx, &task.UpdateTaskRequest{ID: "c1", Resources: &anypb.Any{TypeUrl: vcpolicy.ResourcesTypeURL,
		Value: []byte(`{"devices":[{"allow":false,"access":"rwm"}],"devices":[{"allow":true,"access":"rwm"}]}`)}})
	wantErr(t, err, errdefs.IsInvalidArgument, "Update: resources.devices: key appears twice")
}

// What the policy is shown and what the runtime is handed are the same
// canonical bytes.
func TestPolicyAndRuntimeSeeTheSameBytes(t *testing.T) {
	var seen []byte
	rec := policyFunc(func(ctx context.Context, _ string, req proto.Message) error {
		in, err := vcpolicy.Input(ctx, req)
		if err != nil {
			return err
		}
		seen, _ = json.Marshal(in["spec"])
		return nil
	})
	g := policy.NewGate(rec, validator{container.NewManager(container.Config{})}.check)
	g.SetReady()
	r := &task.ExecProcessRequest{ID: "c1", ExecID: "e1",
		Spec: execAny([]byte("{\"cwd\": \"/\", \"args\": [\"c\\u0061t\", \"/etc/hostname\"],\n \"env\": [\"A=1\"]}"))}
	if err := g.Check(context.Background(), "/containerd.task.v3.Task/Exec", r); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(&specs.Process{Args: []string{"cat", "/etc/hostname"}, Env: []string{"A=1"}, Cwd: "/"})
	if string(r.Spec.Value) != string(want) {
		t.Fatalf("runtime gets %s, want %s", r.Spec.Value, want)
	}
	var a, b any
	json.Unmarshal(seen, &a)
	json.Unmarshal(want, &b)
	if !jsonEqual(a, b) {
		t.Fatalf("policy saw %s, runtime gets %s", seen, want)
	}
}

type policyFunc func(ctx context.Context, method string, req proto.Message) error

func (f policyFunc) Evaluate(ctx context.Context, method string, req proto.Message) error {
	return f(ctx, method, req)
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// Attack 2: an allowed command with the host's choice of everything else.
// Only the container's own process passes the policy; an allowed exec
// gets past it to the runtime (here: no task, so NotFound).
func TestHostileExecIsRefused(t *testing.T) {
	h, ctx := startPolicy(t, ownerExecPolicy())
	own := policytest.CRIProcess("sleep", "1000")
	prepareC1(t, h, ctx, own)
	exec := func(id string, f func(p *specs.Process)) error {
		p := *policytest.CRIProcess("cat", "/etc/hostname")
		f(&p)
		b, _ := json.Marshal(&p)
		_, err := h.client.Task().Exec(ctx, &task.ExecProcessRequest{ID: id, ExecID: "e1", Spec: execAny(b)})
		return err
	}
	same := func(*specs.Process) {}
	if err := exec("c1", same); errdefs.IsPermissionDenied(err) || errdefs.IsInvalidArgument(err) {
		t.Fatalf("containerd's exec of an allowed command refused: %v", err)
	}
	if err := exec("c1", func(p *specs.Process) { p.Args = []string{"ls", "-l", "/tmp"} }); errdefs.IsPermissionDenied(err) {
		t.Fatalf("regex-allowed exec refused: %v", err)
	}
	const denied = "Exec denied by agent policy (rule agent_policy.ExecProcessRequest)"
	for name, f := range map[string]func(p *specs.Process){
		"root":            func(p *specs.Process) { p.User = specs.User{} },
		"LD_PRELOAD":      func(p *specs.Process) { p.Env = append(p.Env, "LD_PRELOAD=/tmp/evil.so") },
		"cwd":             func(p *specs.Process) { p.Cwd = "/tmp" },
		"CAP_SYS_ADMIN":   func(p *specs.Process) { p.Capabilities.Effective = append(p.Capabilities.Effective, "CAP_SYS_ADMIN") },
		"noNewPrivileges": func(p *specs.Process) { p.NoNewPrivileges = false },
		"joined argv":     func(p *specs.Process) { p.Args = []string{"ls -l", "/tmp"} },
		"other argv":      func(p *specs.Process) { p.Args = []string{"sh", "-c", "cat /secret"} },
	} {
		t.Run(name, func(t *testing.T) {
			wantErr(t, exec("c1", f), errdefs.IsPermissionDenied, denied)
		})
	}
	// A container the guest never prepared has no process to compare with.
	wantErr(t, exec("c9", same), errdefs.IsPermissionDenied, denied)
}

// Attack 3: the default TEE policy and containers that reach beyond their
// own: privileged, device cgroup widened, a device node, the pod's pid
// namespace. Refused with the rule named, and nothing is left behind.
func TestHostileContainersAreRefused(t *testing.T) {
	h, ctx := startPolicy(t, policies.DefaultTEE)
	const denied = "PrepareContainer denied by agent policy (rule agent_policy.PrepareContainerRequest)"
	for name, f := range map[string]func(s *specs.Spec){
		"privileged": func(s *specs.Spec) {
			all := append(policytest.DefaultCaps(), "CAP_SYS_ADMIN", "CAP_SYS_PTRACE")
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
			s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		},
		"mknod sev-guest": func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Access: "rwm"})
		},
		"device node": func(s *specs.Spec) {
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/sev-guest", Type: "c", Major: 10, Minor: 123}}
		},
		"pod pid namespace with SYS_PTRACE": func(s *specs.Spec) {
			s.Process.Capabilities.Effective = append(s.Process.Capabilities.Effective, "CAP_SYS_PTRACE")
			s.Linux.Namespaces[0].Path = "/proc/4242/ns/pid"
		},
		"pod pid namespace": func(s *specs.Spec) { s.Linux.Namespaces[0].Path = "/proc/4242/ns/pid" },
	} {
		t.Run(name, func(t *testing.T) {
			s := policytest.CRISpec("sh")
			f(s)
			_, err := h.client.Agent().PrepareContainer(ctx, policytest.Prepare(t, s))
			wantErr(t, err, errdefs.IsPermissionDenied, denied)
			if _, err := os.Stat(filepath.Join(h.dir, "bundles", "c1")); !os.IsNotExist(err) {
				t.Errorf("bundle of a refused container: %v", err)
			}
		})
	}
	// An ordinary container passes the policy (and then waits for a disk
	// this test has none of); no exec into it passes. Without a running
	// sandbox container it has no pod namespaces to join: it gets its own.
	s := policytest.CRISpec("sh")
	s.Linux.Namespaces[1].Path, s.Linux.Namespaces[2].Path = "", ""
	_, err := h.client.Agent().PrepareContainer(ctx, policytest.Prepare(t, s))
	wantErr(t, err, errdefs.IsNotFound, "r1")
	b, _ := json.Marshal(policytest.CRIProcess("cat", "/etc/hostname"))
	_, err = h.client.Task().Exec(ctx, &task.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: execAny(b)})
	wantErr(t, err, errdefs.IsPermissionDenied, "Exec denied by agent policy")
}
