package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/guest-assets/agent/policy"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// textPolicy records which policy text was compiled; it allows everything.
type textPolicy struct{ text string }

func (textPolicy) Evaluate(context.Context, string, proto.Message) error { return nil }

func TestSetupSandboxPolicyPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name, owner, host, want string
		initErr                 error
		wantErr                 string
	}{
		{name: "init-data wins over the host", owner: "owner", host: "host", want: "owner"},
		{name: "host policy without init-data policy", host: "host", want: "host"},
		{name: "neither keeps the image default", want: ""},
		{name: "bad init-data refuses the sandbox", host: "host", initErr: errors.New("HOST_DATA mismatch"), wantErr: "init-data: HOST_DATA mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var compiled []string
			h := startWith(t, func(c *Config) {
				c.CompilePolicy = func(text string) (policy.Policy, error) {
					compiled = append(compiled, text)
					return textPolicy{text}, nil
				}
				c.InitData = func(context.Context) (string, error) { return tc.owner, tc.initErr }
			})
			_, err := h.client.Agent().SetupSandbox(context.Background(), &api.SetupSandboxRequest{SandboxId: "pod", Policy: tc.host})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if _, err := h.client.Agent().PrepareContainer(context.Background(), &api.PrepareContainerRequest{ContainerId: "c"}); !errdefs.IsFailedPrecondition(err) {
					t.Fatalf("sandbox usable after refused setup: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(compiled, ",")
			if got != tc.want {
				t.Fatalf("compiled %q, want %q", got, tc.want)
			}
		})
	}
}

// A policy that does not compile is the caller's mistake (InvalidArgument);
// an engine that cannot run is the guest's (Unavailable), and says so.
func TestSetupSandboxPolicyErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compile error
		is      func(error) bool
	}{
		{"bad policy", errors.New("policy.rego:3: rego_parse_error"), errdefs.IsInvalidArgument},
		{"engine gone", fmt.Errorf("start /usr/bin/coco-policy: no such file: %w", errdefs.ErrUnavailable), errdefs.IsUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startWith(t, func(c *Config) {
				c.CompilePolicy = func(string) (policy.Policy, error) { return nil, tc.compile }
			})
			_, err := h.client.Agent().SetupSandbox(context.Background(), &api.SetupSandboxRequest{SandboxId: "pod", Policy: "package agent_policy"})
			if !tc.is(err) || !strings.Contains(err.Error(), tc.compile.Error()[:20]) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}
