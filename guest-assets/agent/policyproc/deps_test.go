package policyproc

import (
	"os/exec"
	"strings"
	"testing"
)

// The point of coco-policy is that the agent does not link OPA: its package
// initialisation (~250 ms of guest CPU under TCG) would be back on every
// pod's boot. go list sees the import graph the build will link.
func TestAgentDoesNotLinkOPA(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool on PATH: cannot list the agent's imports (what it checks: no OPA package in coco-agent)")
	}
	out, err := exec.Command("go", "list", "-deps", "-tags", "grpcnotrace", "../cmd/coco-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/open-policy-agent/") {
			t.Fatalf("coco-agent links %s: keep OPA in coco-policy (import virtcontainers/policy/engine only from policyproc/server)", pkg)
		}
	}
}
