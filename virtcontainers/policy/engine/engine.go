// Package engine evaluates agent policies with OPA. An undefined rule
// denies: a policy allows only what it names. Only the guest's coco-policy
// process links it: OPA's package initialisation alone costs a quarter of a
// second of guest CPU under TCG, which a guest without a Rego policy (the
// coco-dev class) should not pay at boot.
package engine

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/coco-runtime/coco/virtcontainers/policy"
)

// Engine evaluates one compiled policy. It is safe for concurrent use.
type Engine struct {
	compiler *ast.Compiler
	store    storage.Store // empty: a policy sees only its input

	mu      sync.Mutex
	queries map[string]ast.Body // by rule name, compiled once
}

// Compile parses and compiles a policy module. Errors carry the compiler's
// message with line numbers, e.g. "policy.rego:3: rego_parse_error: ...".
func Compile(source string) (*Engine, error) {
	mod, err := ast.ParseModuleWithOpts("policy.rego", source, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("agent policy does not parse: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if got := mod.Package.Path.String(); got != "data."+policy.Package {
		return nil, fmt.Errorf("agent policy declares package %s; it must be \"package %s\": %w",
			got[len("data."):], policy.Package, errdefs.ErrInvalidArgument)
	}
	c := ast.NewCompiler()
	if c.Compile(map[string]*ast.Module{"policy.rego": mod}); c.Failed() {
		return nil, fmt.Errorf("agent policy does not compile: %w: %w", c.Errors, errdefs.ErrInvalidArgument)
	}
	return &Engine{compiler: c, store: inmem.New(), queries: map[string]ast.Body{}}, nil
}

// Allowed evaluates rule (a request type name such as "ExecProcessRequest")
// against input. It returns false when the rule is undefined or not true.
func (e *Engine) Allowed(ctx context.Context, rule string, input any) (bool, error) {
	q, err := e.query(rule)
	if err != nil {
		return false, err
	}
	in, err := ast.InterfaceToValue(input)
	if err != nil {
		return false, fmt.Errorf("agent policy input for %s: %w", rule, err)
	}
	txn, err := e.store.NewTransaction(ctx)
	if err != nil {
		return false, err
	}
	defer e.store.Abort(ctx, txn)
	rs, err := topdown.NewQuery(q).WithCompiler(e.compiler).WithStore(e.store).WithTransaction(txn).
		WithInput(ast.NewTerm(in)).Run(ctx)
	if err != nil {
		return false, fmt.Errorf("evaluate agent policy rule %s.%s: %w", policy.Package, rule, err)
	}
	// The query holds only when the rule is defined and true.
	return len(rs) > 0, nil
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
		return policy.Denied(method, rule)
	}
	return nil
}

// query is "data.agent_policy.<rule> == true", compiled against the policy
// once per rule. Evaluating with topdown directly (not OPA's rego package)
// keeps the Wasm compiler and planner out of coco-policy.
func (e *Engine) query(rule string) (ast.Body, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if q, ok := e.queries[rule]; ok {
		return q, nil
	}
	ref, err := ast.ParseRef("data." + policy.Package + "." + rule)
	if err != nil || len(ref) != 3 {
		return nil, fmt.Errorf("policy rule name %q: %w", rule, errdefs.ErrInvalidArgument)
	}
	body := ast.NewBody(ast.Equal.Expr(ast.NewTerm(ref), ast.BooleanTerm(true)))
	q, err := e.compiler.QueryCompiler().Compile(body)
	if err != nil {
		return nil, fmt.Errorf("prepare agent policy rule %s: %w", rule, err)
	}
	e.queries[rule] = q
	return q, nil
}
