// Package engine evaluates agent policies with OPA. An undefined rule
// denies: a policy allows only what it names. Only the guest's coco-policy
// process links it: OPA's package initialisation alone costs a quarter of a
// second of guest CPU under TCG, which a guest without a Rego policy (the
// coco-dev class) should not pay at boot.
package engine

import (
	"context"
	"fmt"
	"sort"
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
	d, err := e.decide(ctx, rule, input, false)
	return d.Allowed, err
}

// Decision is a rule's verdict and, for a denial, the policy's own
// explanation of it (see Reasons).
type Decision struct {
	Allowed bool
	Reason  string // "" when the policy gives none
}

// Decide is Allowed plus the reason of a denial: when the rule is not true,
// the engine evaluates data.agent_policy.reasons.<rule> with the same input.
// That value may be a string or a set or array of strings; it is sorted,
// joined with "; " and bounded (see policy.BoundReason), because it travels
// to the host in the CRI error. A reason is an explanation, never a
// decision: the rule alone allows or denies, so a reason rule that fails to
// evaluate only leaves the denial unexplained.
func (e *Engine) Decide(ctx context.Context, rule string, input any) (Decision, error) {
	return e.decide(ctx, rule, input, true)
}

func (e *Engine) decide(ctx context.Context, rule string, input any, explain bool) (Decision, error) {
	q, err := e.query(rule, false)
	if err != nil {
		return Decision{}, err
	}
	in, err := ast.InterfaceToValue(input)
	if err != nil {
		return Decision{}, fmt.Errorf("agent policy input for %s: %w", rule, err)
	}
	rs, err := e.eval(ctx, q, in)
	if err != nil {
		return Decision{}, fmt.Errorf("evaluate agent policy rule %s.%s: %w", policy.Package, rule, err)
	}
	// The query holds only when the rule is defined and true.
	if len(rs) > 0 {
		return Decision{Allowed: true}, nil
	}
	if !explain {
		return Decision{}, nil
	}
	return Decision{Reason: e.reason(ctx, rule, in)}, nil
}

func (e *Engine) eval(ctx context.Context, q ast.Body, in ast.Value) ([]topdown.QueryResult, error) {
	txn, err := e.store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer e.store.Abort(ctx, txn)
	return topdown.NewQuery(q).WithCompiler(e.compiler).WithStore(e.store).WithTransaction(txn).
		WithInput(ast.NewTerm(in)).Run(ctx)
}

// reason evaluates data.agent_policy.reasons.<rule>; "" when it is
// undefined, fails, or holds no string.
func (e *Engine) reason(ctx context.Context, rule string, in ast.Value) string {
	q, err := e.query(rule, true)
	if err != nil {
		return ""
	}
	rs, err := e.eval(ctx, q, in)
	if err != nil || len(rs) == 0 {
		return ""
	}
	var msgs []string
	collect := func(t *ast.Term) {
		if s, ok := t.Value.(ast.String); ok {
			msgs = append(msgs, string(s))
		}
	}
	switch v := rs[0][reasonVar].Value.(type) {
	case ast.String:
		collect(ast.NewTerm(v))
	case ast.Set:
		v.Foreach(collect)
	case *ast.Array:
		v.Foreach(collect)
	}
	sort.Strings(msgs)
	return policy.BoundReason(msgs)
}

// Check is Allowed as an error: a denial is errdefs.ErrPermissionDenied with
// a message naming the request, the rule and the policy's reason, e.g.
// "ExecProcess denied by agent policy (rule agent_policy.ExecProcessRequest)".
func (e *Engine) Check(ctx context.Context, method, rule string, input any) error {
	d, err := e.Decide(ctx, rule, input)
	if err != nil {
		return err
	}
	if !d.Allowed {
		return policy.DeniedBecause(method, rule, d.Reason)
	}
	return nil
}

// reasonVar binds the value of a reasons query.
const reasonVar = "reason"

// query is "data.agent_policy.<rule> == true" (or, for reasons,
// "reason = data.agent_policy.reasons.<rule>"), compiled against the policy
// once per rule. Evaluating with topdown directly (not OPA's rego package)
// keeps the Wasm compiler and planner out of coco-policy.
func (e *Engine) query(rule string, reasons bool) (ast.Body, error) {
	key := rule
	if reasons {
		key = "reasons." + rule
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if q, ok := e.queries[key]; ok {
		return q, nil
	}
	ref, err := ast.ParseRef("data." + policy.Package + "." + rule)
	if err != nil || len(ref) != 3 {
		return nil, fmt.Errorf("policy rule name %q: %w", rule, errdefs.ErrInvalidArgument)
	}
	body := ast.NewBody(ast.Equal.Expr(ast.NewTerm(ref), ast.BooleanTerm(true)))
	if reasons {
		rref, _ := ast.ParseRef("data." + policy.Package + ".reasons." + rule)
		body = ast.NewBody(ast.Equality.Expr(ast.VarTerm(reasonVar), ast.NewTerm(rref)))
	}
	q, err := e.compiler.QueryCompiler().Compile(body)
	if err != nil {
		return nil, fmt.Errorf("prepare agent policy rule %s: %w", key, err)
	}
	e.queries[key] = q
	return q, nil
}
