package policy

import (
	"fmt"
	"io"
	"strings"

	"github.com/coco-runtime/coco/configs/policies"
)

const schemaUsage = `Usage: containerd-shim-coco-v2 policy input-schema

Prints the input every agent policy rule receives (from
configs/policies/README.md, the same text the repository documents).

`

func schemaMain(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("policy input-schema", stderr, schemaUsage)
	if code, done := parse(fs, args); done {
		return code
	}
	fmt.Fprint(stdout, section(policies.README, "## The input", "## What `default-tee.rego` allows"))
	fmt.Fprint(stdout, section(policies.README, "## Denial reasons", "## "))
	return exitOK
}

// section returns the text from the heading start up to the next heading
// beginning with end (or the end of the document).
func section(doc, start, end string) string {
	i := strings.Index(doc, start)
	if i < 0 {
		return ""
	}
	rest := doc[i+len(start):]
	if j := strings.Index(rest, "\n"+end); j >= 0 {
		rest = rest[:j+1]
	}
	return start + rest
}
