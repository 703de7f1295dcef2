// Package policies holds the agent policies shipped with the runtime; the
// guest agent embeds them as its defaults.
package policies

import _ "embed"

// AllowAll lets the host ask for anything (coco-dev, no TEE).
//
//go:embed allow-all.rego
var AllowAll string

// DefaultTEE allows the pod lifecycle and unprivileged containers, and
// denies exec, container stdio, port-forward and policy changes unless the pod owner's
// policy allows them. README.md describes every rule's input.
//
//go:embed default-tee.rego
var DefaultTEE string

// README documents every rule's input and the shipped policies; `policy
// input-schema` prints its input sections.
//
//go:embed README.md
var README string
