package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/guest-assets/agent/policy"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// rulePolicy stands in for a compiled Rego policy: it denies the methods it
// lists, and SetPolicy unless the policy text is the one it allows.
type rulePolicy struct {
	text       string
	deny       map[string]bool
	allowedSet string // the one policy text SetPolicy may install
}

func (p rulePolicy) Evaluate(_ context.Context, method string, req proto.Message) error {
	if p.deny[method] {
		return fmt.Errorf("rule agent_policy.%sRequest is false", method)
	}
	if r, ok := req.(*api.SetPolicyRequest); ok && (p.allowedSet == "" || r.GetPolicy() != p.allowedSet) {
		return errors.New("rule agent_policy.SetPolicyRequest is false")
	}
	return nil
}

// teeDefault is the default TEE policy's stance: no SetPolicy.
var teeDefault = rulePolicy{text: "default-tee"}

// compiled records the policy texts compiled and returns a rulePolicy that
// denies nothing but SetPolicy (text "owner-allows:<t>" allows <t>).
type compiled struct{ texts []string }

func (c *compiled) compile(text string) (policy.Policy, error) {
	c.texts = append(c.texts, text)
	if rest, ok := strings.CutPrefix(text, "owner-denies-setup"); ok {
		return rulePolicy{text: text, deny: map[string]bool{"SetupSandbox": true}, allowedSet: rest}, nil
	}
	allowed, _ := strings.CutPrefix(text, "owner-allows:")
	return rulePolicy{text: text, allowedSet: allowed}, nil
}

func TestSetupSandboxPolicyPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name, owner, host string
		tee               bool
		wantCompiled      string
		wantErr           func(error) bool
		wantWords         []string
	}{
		{name: "plain VM: init-data wins over the host", owner: "owner", host: "host", wantCompiled: "owner"},
		{name: "plain VM: host policy without init-data policy", host: "host", wantCompiled: "host"},
		{name: "plain VM: neither keeps the image default", wantCompiled: ""},
		{name: "TEE: host policy refused under the default TEE policy", tee: true, host: "allow-all",
			wantErr: errdefs.IsPermissionDenied, wantWords: []string{"owner's init-data", "SetPolicy"}},
		{name: "TEE: host policy refused under the owner's policy", tee: true, owner: "owner", host: "allow-all",
			wantCompiled: "owner", wantErr: errdefs.IsPermissionDenied, wantWords: []string{"SetPolicyRequest"}},
		{name: "TEE: the exact policy the owner allows", tee: true, owner: "owner-allows:pinned", host: "pinned",
			wantCompiled: "owner-allows:pinned,pinned"},
		{name: "TEE: no host policy keeps the owner's", tee: true, owner: "owner", wantCompiled: "owner"},
		{name: "SetupSandbox is judged by the owner's policy", owner: "owner-denies-setup",
			wantCompiled: "owner-denies-setup", wantErr: errdefs.IsPermissionDenied, wantWords: []string{"SetupSandbox denied"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &compiled{}
			h := startWith(t, func(cfg *Config) {
				cfg.TEE = tc.tee
				if tc.tee {
					cfg.Policy = teeDefault
				}
				cfg.CompilePolicy = c.compile
				cfg.Owner = func(context.Context) (string, error) { return tc.owner, nil }
			})
			_, err := h.client.Agent().SetupSandbox(context.Background(), &api.SetupSandboxRequest{SandboxId: "pod", Policy: tc.host, Hostname: "pod-host"})
			if got := strings.Join(c.texts, ","); got != tc.wantCompiled {
				t.Errorf("compiled %q, want %q", got, tc.wantCompiled)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErr(t, err, tc.wantErr, tc.wantWords...)
			if h.guest.hostname != "" {
				t.Errorf("hostname %q set by a refused SetupSandbox", h.guest.hostname)
			}
			_, err = h.client.Agent().PrepareContainer(context.Background(), &api.PrepareContainerRequest{ContainerId: "c"})
			wantErr(t, err, errdefs.IsFailedPrecondition, "sandbox not set up")
		})
	}
}

// SetPolicy in a TEE guest is judged by the policy in force: the default
// TEE policy refuses it, so a host cannot relax the guest after set-up.
func TestSetPolicyRefusedInTEE(t *testing.T) {
	c := &compiled{}
	h := startWith(t, func(cfg *Config) {
		cfg.TEE, cfg.Policy, cfg.CompilePolicy = true, teeDefault, c.compile
		cfg.Owner = func(context.Context) (string, error) { return "", nil }
	})
	if _, err := h.client.Agent().SetupSandbox(context.Background(), &api.SetupSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	_, err := h.client.Agent().SetPolicy(context.Background(), &api.SetPolicyRequest{Policy: "allow-all"})
	wantErr(t, err, errdefs.IsPermissionDenied, "SetPolicy")
	if len(c.texts) != 0 {
		t.Fatalf("compiled %q after a refused SetPolicy", c.texts)
	}
}

// Init-data the guest cannot verify refuses every request but Health with
// the reason, and powers the guest off after the first refusal.
func TestOwnerUnverifiedRefusesAll(t *testing.T) {
	reason := fmt.Errorf("SNP HOST_DATA in the TEE report is abab, but no init-data disk is attached: %w", errdefs.ErrFailedPrecondition)
	h := startWith(t, func(cfg *Config) {
		cfg.TEE, cfg.Policy = true, teeDefault
		cfg.Owner = func(context.Context) (string, error) { return "", reason }
	})
	if h.client.Health() == nil {
		t.Fatal("Health refused")
	}
	_, err := h.client.Agent().SetupSandbox(context.Background(), &api.SetupSandboxRequest{SandboxId: "pod", Hostname: "h"})
	wantErr(t, err, errdefs.IsFailedPrecondition, "SetupSandbox refused", "init-data", "SNP HOST_DATA", "no init-data disk")
	select {
	case why := <-h.destroyed:
		if !strings.Contains(why, "no init-data disk") {
			t.Errorf("powered off because %q", why)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the guest did not power off after refusing")
	}
	if h.guest.hostname != "" {
		t.Error("hostname set")
	}
}

// A policy in the owner's init-data that does not compile refuses the
// sandbox: the guest must not fall back to a laxer policy.
func TestOwnerPolicyThatDoesNotCompile(t *testing.T) {
	h := startWith(t, func(cfg *Config) {
		cfg.CompilePolicy = func(string) (policy.Policy, error) { return nil, errors.New("policy.rego:1: rego_parse_error") }
		cfg.Owner = func(context.Context) (string, error) { return "package agent_policy\nbroken", nil }
	})
	_, err := h.client.Agent().SetupSandbox(context.Background(), &api.SetupSandboxRequest{SandboxId: "pod"})
	wantErr(t, err, errdefs.IsInvalidArgument, "init-data policy.rego", "rego_parse_error")
}

// A policy the host sends that does not compile is the caller's mistake
// (InvalidArgument); an engine that cannot run is the guest's
// (Unavailable), and says so.
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

// A host that could write any /proc/sys key would run code as guest root:
// kernel.core_pattern = "|/path/to/rootfs/bin/sh ..." runs at the next
// crash. Only the allow-list passes, and nothing is applied when one key
// is refused.
func TestSetupSandboxSysctlAllowList(t *testing.T) {
	for _, tc := range []struct {
		key, value string
		ok         bool
	}{
		{"kernel.core_pattern", "|/run/coco/bundles/c/rootfs/bin/sh -c id", false},
		{"kernel/core_pattern", "|/bin/sh", false},
		{"kernel.modprobe", "/tmp/x", false},
		{"vm.overcommit_memory", "1", false},
		{"fs.protected_symlinks", "0", false},
		{"net.core.bpf_jit_enable", "1", false},
		{"net..ipv4", "1", false},
		{"net.ipv4.ip_forward", "1\nkernel.core_pattern=|sh", false},
		{"net.ipv4.ip_unprivileged_port_start", "0", true},
		{"net/ipv4/conf/eth0/forwarding", "1", true},
		{"kernel.shm_rmid_forced", "1", true},
		{"kernel.msgmax", "65536", true},
		{"fs.mqueue.msg_max", "20", true},
	} {
		t.Run(tc.key, func(t *testing.T) {
			h := start(t)
			_, err := h.client.Agent().SetupSandbox(context.Background(), &api.SetupSandboxRequest{
				SandboxId: "pod", Hostname: "h", Sysctls: map[string]string{tc.key: tc.value}})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if h.guest.sysctls[tc.key] != tc.value {
					t.Fatalf("sysctl not applied: %v", h.guest.sysctls)
				}
				return
			}
			wantErr(t, err, errdefs.IsInvalidArgument, "sysctls", tc.key)
			if len(h.guest.sysctls) != 0 || h.guest.hostname != "" {
				t.Fatalf("applied despite the refusal: sysctls %v hostname %q", h.guest.sysctls, h.guest.hostname)
			}
		})
	}
}
