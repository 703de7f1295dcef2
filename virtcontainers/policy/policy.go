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
