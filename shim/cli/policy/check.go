package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// The request types `check` decodes by name: the agent's and the task API's.
	_ "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/coco-runtime/coco/guest-assets/agent/policyproc"
	_ "github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
	vcpolicy "github.com/coco-runtime/coco/virtcontainers/policy"
)

const checkUsage = `Usage: containerd-shim-coco-v2 policy check --policy POLICY --request REQUEST.json

Evaluates one request against POLICY (a .rego file, or init-data TOML with
a policy.rego entry) with the guest's own engine, coco-policy, and prints
"allowed" or "denied: <the policy's reasons>". Exit 0 allowed, 1 denied.

REQUEST.json is one of
  {"rule": "PrepareContainerRequest", "input": {...}}
      the policy input as the agent builds it (see policy input-schema);
  {"type": "coco.agent.v1.PrepareContainerRequest", "request": {...},
   "facts": {...}}
      the request itself in protobuf JSON (spec as base64, as on the wire):
      its JSON documents are decoded strictly and canonicalised as the
      guest does before the policy sees them; facts (e.g.
      container_process for an exec) are added to the input.

`

func checkMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var policyPath, requestPath, enginePath string
	fs := newFlagSet("policy check", stderr, checkUsage)
	fs.StringVar(&policyPath, "policy", "", "the policy: .rego or init-data TOML")
	fs.StringVar(&requestPath, "request", "", "the request JSON (- for stdin)")
	fs.StringVar(&enginePath, "engine", "", "coco-policy to evaluate with (default: next to this binary, $COCO_SHARE_DIR, build/guest, PATH)")
	if code, done := parse(fs, args); done {
		return code
	}
	if policyPath == "" || requestPath == "" {
		fmt.Fprintln(stderr, "policy check: --policy and --request are required")
		return exitUsage
	}
	rego, err := readPolicy(policyPath)
	if err == nil {
		var rule string
		var input json.RawMessage
		if rule, input, err = readRequest(ctx, requestPath); err == nil {
			var eng *policyproc.Proc
			if eng, err = startEngine(enginePath); err == nil {
				defer eng.Close()
				err = evaluate(eng, rego, rule, input)
			}
		}
	}
	switch {
	case err == nil:
		fmt.Fprintln(stdout, "allowed")
		return exitOK
	case errdefs.IsPermissionDenied(err):
		fmt.Fprintf(stdout, "denied: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stderr, "policy check: %v\n", err)
	return exitUsage
}

// readPolicy takes a Rego file or init-data TOML (its policy.rego).
func readPolicy(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(path, ".rego") {
		return string(raw), nil
	}
	id, err := initdata.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%s: neither .rego nor init-data: %w", path, err)
	}
	p, ok := id.Get(initdata.KeyPolicy)
	if !ok {
		return "", fmt.Errorf("%s: init-data has no %s", path, initdata.KeyPolicy)
	}
	return p, nil
}

type requestFile struct {
	Rule    string          `json:"rule"`
	Input   json.RawMessage `json:"input"`
	Type    string          `json:"type"`
	Request json.RawMessage `json:"request"`
	Facts   map[string]any  `json:"facts"`
}

func readRequest(ctx context.Context, path string) (string, json.RawMessage, error) {
	raw, err := readFileOrStdin(path)
	if err != nil {
		return "", nil, err
	}
	var rf requestFile
	if err := strictUnmarshal(raw, &rf); err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case rf.Rule != "" && len(rf.Input) > 0 && rf.Type == "":
		return rf.Rule, rf.Input, nil
	case rf.Type != "" && len(rf.Request) > 0 && rf.Rule == "":
		return fromProto(ctx, rf)
	}
	return "", nil, fmt.Errorf("%s: give either rule and input, or type and request", path)
}

// fromProto builds the input exactly as the agent does: decode, then
// canonicalise the JSON documents, then policy.Input with the facts.
func fromProto(ctx context.Context, rf requestFile) (string, json.RawMessage, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(rf.Type))
	if err != nil {
		return "", nil, fmt.Errorf("request type %q: %w", rf.Type, err)
	}
	msg := mt.New().Interface()
	if err := protojson.Unmarshal(rf.Request, msg); err != nil {
		return "", nil, fmt.Errorf("request: %w", err)
	}
	if _, err := vcpolicy.Canonicalize(msg); err != nil {
		return "", nil, err
	}
	facts := vcpolicy.Facts{}
	for k, v := range rf.Facts {
		js, err := json.Marshal(v)
		if err != nil {
			return "", nil, err
		}
		facts[k] = json.RawMessage(js)
	}
	doc, err := vcpolicy.Input(vcpolicy.WithFacts(ctx, facts), msg)
	if err != nil {
		return "", nil, err
	}
	in, err := json.Marshal(doc)
	return vcpolicy.RuleName(msg), in, err
}

// evaluate asks coco-policy through the agent's own client, which turns a
// denial into the agent's error (with the policy's reasons).
func evaluate(eng *policyproc.Proc, rego, rule string, input json.RawMessage) error {
	r, err := eng.Compile(rego)
	if err != nil {
		return err
	}
	return r.EvaluateInput(strings.TrimSuffix(rule, "Request"), rule, input)
}

// verify compiles a generated policy with coco-policy when one is found:
// a generator bug must not reach a pod as a policy that does not compile.
func verify(_ context.Context, enginePath, rego string) error {
	path, err := findEngine(enginePath)
	if err != nil {
		if enginePath != "" {
			return err
		}
		return nil // no engine here: the guest compiles it at boot
	}
	eng := policyproc.New(policyproc.ChildReaper{}, path)
	defer eng.Close()
	if _, err := eng.Compile(rego); err != nil {
		return fmt.Errorf("generated policy does not compile (a generator bug, please report it): %w", err)
	}
	return nil
}

func startEngine(enginePath string) (*policyproc.Proc, error) {
	path, err := findEngine(enginePath)
	if err != nil {
		return nil, err
	}
	return policyproc.New(policyproc.ChildReaper{}, path), nil
}

// findEngine looks for coco-policy: the flag, next to this binary,
// $COCO_SHARE_DIR, the build tree, PATH.
func findEngine(flagPath string) (string, error) {
	if flagPath != "" {
		if _, err := os.Stat(flagPath); err != nil {
			return "", fmt.Errorf("--engine: %w", err)
		}
		return flagPath, nil
	}
	var candidates []string
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), policyproc.Name))
	}
	if d := os.Getenv("COCO_SHARE_DIR"); d != "" {
		candidates = append(candidates, filepath.Join(d, policyproc.Name))
	}
	candidates = append(candidates, filepath.Join("build", "guest", policyproc.Name))
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c, nil
		}
	}
	if p, err := exec.LookPath(policyproc.Name); err == nil {
		return p, nil
	}
	return "", errors.New("coco-policy not found (build it with `make coco-policy`, or give --engine)")
}

func strictUnmarshal(raw []byte, v any) error {
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.DisallowUnknownFields()
	return d.Decode(v)
}
