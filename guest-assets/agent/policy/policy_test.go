package policy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type recordPolicy struct{ methods []string }

func (p *recordPolicy) Evaluate(_ context.Context, m string, _ proto.Message) error {
	p.methods = append(p.methods, m)
	if m == "Exec" {
		return errors.New("exec is off")
	}
	return nil
}

// call runs the gate's interceptor the way the ttrpc server does.
func call(g *Gate, method string, wire []byte, handler func(req proto.Message) (any, error)) error {
	ic := g.UnaryInterceptor()
	_, err := ic(context.Background(), func(v any) error { return proto.Unmarshal(wire, v.(proto.Message)) },
		&ttrpc.UnaryServerInfo{FullMethod: method},
		func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var req wrapperspb.StringValue
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			return handler(&req)
		})
	return errgrpc.ToNative(err)
}

func TestGate(t *testing.T) {
	p := &recordPolicy{}
	g := NewGate(p, func(ctx context.Context, method string, req proto.Message) (context.Context, error) {
		if s, ok := req.(*wrapperspb.StringValue); ok && s.Value == "bad" {
			return ctx, errors.New("value: bad: invalid argument")
		}
		return ctx, nil
	})
	ok := func(proto.Message) (any, error) { return &emptypb.Empty{}, nil }
	good, _ := proto.Marshal(wrapperspb.String("x"))

	if err := call(g, HealthMethod, good, ok); err != nil {
		t.Errorf("Health before setup: %v", err)
	}
	err := call(g, "/containerd.task.v3.Task/Start", good, ok)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "Start refused: sandbox not set up") {
		t.Errorf("Start before setup: %v", err)
	}
	g.SetReady()
	if err := call(g, "/containerd.task.v3.Task/Start", good, ok); err != nil {
		t.Errorf("Start after setup: %v", err)
	}
	err = call(g, "/containerd.task.v3.Task/Exec", good, ok)
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "Exec denied by agent policy: exec is off") {
		t.Errorf("denied Exec: %v", err)
	}
	err = call(g, "/containerd.task.v3.Task/Start", []byte{0xff, 0xff, 0xff}, ok)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "malformed request") {
		t.Errorf("garbage bytes: %v", err)
	}
	err = call(g, "/containerd.task.v3.Task/Panic", good, func(proto.Message) (any, error) { panic("boom") })
	if !errdefs.IsInternal(err) || !strings.Contains(err.Error(), "Panic") {
		t.Errorf("panicking handler: %v", err)
	}
	if len(p.methods) == 0 || p.methods[0] != "Health" {
		t.Errorf("policy saw %v, want short method names", p.methods)
	}
}

type factKey struct{}

// What the validator learns about a request (an exec's container process)
// reaches the policy through the context it returns.
func TestValidatorContextReachesPolicy(t *testing.T) {
	var seen any
	p := policyFunc(func(ctx context.Context, _ string, _ proto.Message) error {
		seen = ctx.Value(factKey{})
		return nil
	})
	g := NewGate(p, func(ctx context.Context, _ string, _ proto.Message) (context.Context, error) {
		return context.WithValue(ctx, factKey{}, "container process"), nil
	})
	g.SetReady()
	if err := g.Check(context.Background(), "/containerd.task.v3.Task/Exec", wrapperspb.String("x")); err != nil {
		t.Fatal(err)
	}
	if seen != "container process" {
		t.Fatalf("policy saw %v, want the validator's fact", seen)
	}
}

type policyFunc func(ctx context.Context, method string, req proto.Message) error

func (f policyFunc) Evaluate(ctx context.Context, method string, req proto.Message) error {
	return f(ctx, method, req)
}
