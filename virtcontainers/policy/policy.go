// Package policy holds what every side of the agent policy shares without
// the Rego engine: the package a policy declares, the rule that decides a
// request (its message type name), the request as the policy's input, and
// the denial error. The pod owner's Rego module (package agent_policy)
// decides every request the untrusted host sends: for a request of type T
// the agent evaluates data.agent_policy.T with the request as input, and
// anything but true denies it. The engine itself (OPA) lives in
// policy/engine, which only the guest's coco-policy process links.
package policy

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/containerd/errdefs"
)

// Package is the Rego package every agent policy must declare.
const Package = "agent_policy"

// Denied is the error for a request the policy refuses, e.g.
// "ExecProcess denied by agent policy (rule agent_policy.ExecProcessRequest)";
// it is errdefs.ErrPermissionDenied.
func Denied(method, rule string) error {
	return fmt.Errorf("%s denied by agent policy (rule %s.%s): %w", method, Package, rule, errdefs.ErrPermissionDenied)
}

// DeniedBecause is Denied with the policy's reason appended, e.g.
// "CreateContainer denied by agent policy (rule
// agent_policy.PrepareContainerRequest): containers[app].args: ...".
// An empty reason gives Denied's message.
func DeniedBecause(method, rule, reason string) error {
	if reason == "" {
		return Denied(method, rule)
	}
	return fmt.Errorf("%s denied by agent policy (rule %s.%s): %s: %w", method, Package, rule, reason, errdefs.ErrPermissionDenied)
}

// Bounds on a denial's reason: it reaches the host (and kubectl describe),
// so a policy cannot make the guest send more than this, nor control
// characters that would forge log lines.
const (
	MaxReasons      = 6
	MaxReasonBytes  = 256
	MaxReasonsBytes = 2048
)

// BoundReason joins a policy's reasons with "; ", keeping the first
// MaxReasons (saying how many were left out), each cut to MaxReasonBytes,
// with control characters replaced by '?'.
func BoundReason(msgs []string) string {
	var b strings.Builder
	for i, m := range msgs {
		if i == MaxReasons {
			fmt.Fprintf(&b, "; and %d more", len(msgs)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		m = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return '?'
			}
			return r
		}, m)
		if len(m) > MaxReasonBytes {
			m = strings.ToValidUTF8(m[:MaxReasonBytes], "") + "..."
		}
		b.WriteString(m)
	}
	return BoundReasonText(b.String())
}

// BoundReasonText bounds an already joined reason (what the engine process
// sent) to MaxReasonsBytes, control characters replaced by '?'.
func BoundReasonText(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > MaxReasonsBytes {
		s = strings.ToValidUTF8(s[:MaxReasonsBytes], "") + "..."
	}
	return s
}
