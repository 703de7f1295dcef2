// Package policy is the guest agent's policy engine. The pod owner's Rego
// module (package agent_policy) decides every request the untrusted host
// sends: for a request of type T the agent evaluates data.agent_policy.T with
// the request as input, and anything but true denies it. An undefined rule
// denies: a policy allows only what it names.
package policy

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"google.golang.org/protobuf/proto"
)

// Package is the Rego package every agent policy must declare.
const Package = "agent_policy"

// Engine evaluates one compiled policy. It is safe for concurrent use.
type Engine struct {
	compiler *ast.Compiler
	source   string

	mu      sync.Mutex
	queries map[string]*rego.PreparedEvalQuery // by rule name, prepared once
}

// Compile parses and compiles a policy module. Errors carry the compiler's
// message with line numbers, e.g. "policy.rego:3: rego_parse_error: ...".
func Compile(source string) (*Engine, error) {
	mod, err := ast.ParseModuleWithOpts("policy.rego", source, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("agent policy does not parse: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if got := mod.Package.Path.String(); got != "data."+Package {
		return nil, fmt.Errorf("agent policy declares package %s; it must be \"package %s\": %w",
			got[len("data."):], Package, errdefs.ErrInvalidArgument)
	}
	c := ast.NewCompiler()
	if c.Compile(map[string]*ast.Module{"policy.rego": mod}); c.Failed() {
		return nil, fmt.Errorf("agent policy does not compile: %w: %w", c.Errors, errdefs.ErrInvalidArgument)
	}
	return &Engine{compiler: c, source: source, queries: map[string]*rego.PreparedEvalQuery{}}, nil
}

// Source returns the policy text the engine was compiled from.
func (e *Engine) Source() string { return e.source }

// Allowed evaluates rule (a request type name such as "ExecProcessRequest")
// against input. It returns false when the rule is undefined or not true.
func (e *Engine) Allowed(ctx context.Context, rule string, input any) (bool, error) {
	q, err := e.query(ctx, rule)
	if err != nil {
		return false, err
	}
	rs, err := q.Eval(ctx, rego.EvalInput(input))
	if err != nil {
		return false, fmt.Errorf("evaluate agent policy rule %s.%s: %w", Package, rule, err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return false, nil // undefined: deny
	}
	allowed, _ := rs[0].Expressions[0].Value.(bool)
	return allowed, nil
}

// Check is Allowed as an error: a denial is errdefs.ErrPermissionDenied with
// a message naming the request and the rule, e.g.
// "ExecProcess denied by agent policy (rule agent_policy.ExecProcessRequest)".
func (e *Engine) Check(ctx context.Context, method, rule string, input any) error {
	ok, err := e.Allowed(ctx, rule, input)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s denied by agent policy (rule %s.%s): %w", method, Package, rule, errdefs.ErrPermissionDenied)
	}
	return nil
}

func (e *Engine) query(ctx context.Context, rule string) (*rego.PreparedEvalQuery, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if q, ok := e.queries[rule]; ok {
		return q, nil
	}
	ref, err := ast.ParseRef("data." + Package + "." + rule)
	if err != nil {
		return nil, fmt.Errorf("policy rule name %q: %w", rule, errdefs.ErrInvalidArgument)
	}
	q, err := rego.New(rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))), rego.Compiler(e.compiler)).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare agent policy rule %s: %w", rule, err)
	}
	e.queries[rule] = &q
	return &q, nil
}

// Evaluate decides one request from the host: the rule is the request's
// message type name and the input its fields (see Input).
func (e *Engine) Evaluate(ctx context.Context, method string, req proto.Message) error {
	return e.Check(ctx, method, RuleName(req), Input(req))
}
