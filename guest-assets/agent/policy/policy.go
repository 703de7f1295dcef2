// Package policy is the guest's gate for every request from the host: it
// refuses all but Health until the sandbox is set up, validates each request,
// and asks the agent policy. The Rego engine plugs in as a Policy.
package policy

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
)

// Policy decides whether the host may make a request. method is the ttrpc
// method name without its service ("Exec", "PrepareContainer"); req is the
// decoded, validated request (its type names the rule). A nil error allows
// it. Implementations must be safe for concurrent use.
type Policy interface {
	Evaluate(ctx context.Context, method string, req proto.Message) error
}

// AllowAll allows every request (the coco-dev default).
type AllowAll struct{}

// Evaluate allows everything.
func (AllowAll) Evaluate(context.Context, string, proto.Message) error { return nil }

// Methods always allowed before SetupSandbox.
const (
	HealthMethod       = "/coco.agent.v1.Agent/Health"
	SetupSandboxMethod = "/coco.agent.v1.Agent/SetupSandbox"
)

// Validator checks a decoded request; it returns an InvalidArgument error
// naming the field. Requests that have a Validate method are checked by it
// first. It may rewrite req in place (canonical JSON documents, so that the
// policy and the runtime read the same bytes) and return ctx with facts for
// the policy input (policy.WithFacts in virtcontainers/policy).
type Validator func(ctx context.Context, method string, req proto.Message) (context.Context, error)

// Gate runs the checks for every request. The zero value is not usable; use
// NewGate.
type Gate struct {
	mu       sync.RWMutex
	policy   Policy
	ready    atomic.Bool
	readyCh  chan struct{}
	validate Validator
	owner    func(ctx context.Context) error // nil: nothing to wait for
}

// NewGate returns a gate with the given policy (nil = AllowAll) and extra
// validator (may be nil).
func NewGate(p Policy, v Validator) *Gate {
	if p == nil {
		p = AllowAll{}
	}
	return &Gate{policy: p, validate: v, readyCh: make(chan struct{})}
}

// WaitOwner makes every request but Health wait for wait before anything
// else is checked: the agent loads and verifies the owner's init-data (and
// installs the owner's policy) there, so that SetupSandbox itself is judged
// by the owner's policy. An error from wait refuses the request with it.
// Call before serving.
func (g *Gate) WaitOwner(wait func(ctx context.Context) error) { g.owner = wait }

// SetPolicy replaces the policy for later requests.
func (g *Gate) SetPolicy(p Policy) {
	g.mu.Lock()
	g.policy = p
	g.mu.Unlock()
}

// SetReady opens the gate to requests other than Health.
func (g *Gate) SetReady() {
	if !g.ready.Swap(true) {
		close(g.readyCh)
	}
}

// WaitReady blocks until the sandbox is set up or ctx is done.
func (g *Gate) WaitReady(ctx context.Context) error {
	select {
	case <-g.readyCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready says whether the sandbox has been set up.
func (g *Gate) Ready() bool { return g.ready.Load() }

// Check runs the gate for one request and returns an errdefs-classed error.
func (g *Gate) Check(ctx context.Context, method string, req proto.Message) error {
	if g.owner != nil && method != HealthMethod {
		if err := g.owner(ctx); err != nil {
			return fmt.Errorf("%s refused: %w", methodName(method), err)
		}
	}
	if !g.ready.Load() && method != HealthMethod && method != SetupSandboxMethod {
		return fmt.Errorf("%s refused: sandbox not set up (call SetupSandbox first): %w", methodName(method), errdefs.ErrFailedPrecondition)
	}
	if v, ok := req.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%s: %w", methodName(method), err)
		}
	}
	if g.validate != nil {
		vctx, err := g.validate(ctx, method, req)
		if err != nil {
			return fmt.Errorf("%s: %w", methodName(method), err)
		}
		ctx = vctx
	}
	return g.Judge(ctx, method, req)
}

// Judge asks only the policy in force about a request, whether or not the
// sandbox is set up: the agent puts a change the host asks for inside
// another request (a policy sent with SetupSandbox) to the rule that would
// judge it on its own.
func (g *Gate) Judge(ctx context.Context, method string, req proto.Message) error {
	g.mu.RLock()
	p := g.policy
	g.mu.RUnlock()
	if err := p.Evaluate(ctx, methodName(method), req); err != nil {
		log.G(ctx).WithField("method", method).Debug("denied by agent policy")
		if errdefs.IsPermissionDenied(err) {
			return err
		}
		return fmt.Errorf("%s denied by agent policy: %v: %w", methodName(method), err, errdefs.ErrPermissionDenied)
	}
	log.G(ctx).WithField("method", method).Debug("allowed by agent policy")
	return nil
}

// JudgeWorkload asks the policy in force about a request of the pod's own
// containers (the workload API), once the owner's init-data is in force:
// the host sends none of these, so neither sandbox readiness nor host
// validation applies.
func (g *Gate) JudgeWorkload(ctx context.Context, req proto.Message) error {
	method := strings.TrimSuffix(string(req.ProtoReflect().Descriptor().Name()), "Request")
	if g.owner != nil {
		if err := g.owner(ctx); err != nil {
			return fmt.Errorf("%s refused: %w", method, err)
		}
	}
	return g.Judge(ctx, method, req)
}

// methodName turns "/pkg.Service/Method" into "Method".
func methodName(full string) string {
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[i+1:]
	}
	return full
}

// errRejected marks an unmarshal failure caused by the gate, so that the
// interceptor returns the gate's error unchanged.
type errRejected struct{ err error }

func (e errRejected) Error() string { return e.err.Error() }
func (e errRejected) Unwrap() error { return e.err }

// UnaryInterceptor checks every unary request as the method decodes it.
// A panic in a handler becomes an Internal error: the agent is PID 1 and
// must not die of one bad request.
func (g *Gate) UnaryInterceptor() ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.G(ctx).WithField("method", info.FullMethod).Errorf("panic: %v\n%s", r, debug.Stack())
				resp, err = nil, errgrpc.ToGRPC(fmt.Errorf("%s: internal error in the guest agent: %w", methodName(info.FullMethod), errdefs.ErrInternal))
			}
		}()
		checked := func(v any) error {
			if err := unmarshal(v); err != nil {
				return fmt.Errorf("%s: malformed request: %v: %w", methodName(info.FullMethod), err, errdefs.ErrInvalidArgument)
			}
			m, ok := v.(proto.Message)
			if !ok {
				return fmt.Errorf("%s: request is not a protobuf message: %w", methodName(info.FullMethod), errdefs.ErrInvalidArgument)
			}
			if err := g.Check(ctx, info.FullMethod, m); err != nil {
				return errRejected{err}
			}
			return nil
		}
		resp, err = method(ctx, checked)
		var rej errRejected
		if errors.As(err, &rej) {
			err = rej.err
		}
		if err != nil {
			err = errgrpc.ToGRPC(err)
		}
		return resp, err
	}
}
