package policyproc

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// An engine that reads requests but never answers must not stall the
// agent: the exchange gives up, kills it and fails closed.
func TestEngineThatHangsTimesOut(t *testing.T) {
	t.Setenv("POLICYPROC_TEST_MODE", "hang")
	p := New(testReaper{}, os.Args[0])
	p.timeout = 200 * time.Millisecond
	defer p.Close()
	_, err := p.Compile("package agent_policy\n")
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "did not answer a compile within 200ms") {
		t.Fatalf("err = %v, want unavailable after the timeout", err)
	}
}
