package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/coco-runtime/coco/virtcontainers/policy"
)

func TestDecideReasons(t *testing.T) {
	e, err := Compile(`package agent_policy
import rego.v1
default A := false
reasons.A contains "b: second" if input.x == 1
reasons.A contains "a: first\nforged log line" if input.x == 1
B if input.x == 1
reasons.B := "never read: B is true"
default C := false
reasons.C := 42
default D := false
reasons.D contains sprintf("m%d", [i]) if some i in numbers.range(1, 9)
default E := false
reasons.E contains x if x := input.missing.field
`)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in := map[string]any{"x": 1}
	for rule, want := range map[string]string{
		"A": "a: first?forged log line; b: second",
		"B": "",
		"C": "",
		"D": "m1; m2; m3; m4; m5; m6; and 3 more",
		"E": "",
	} {
		d, err := e.Decide(ctx, rule, in)
		if err != nil {
			t.Fatal(err)
		}
		if d.Reason != want || d.Allowed != (rule == "B") {
			t.Errorf("%s: %+v, want reason %q", rule, d, want)
		}
	}
	err = e.Check(ctx, "Run", "A", in)
	if err == nil || !strings.HasSuffix(err.Error(), "(rule agent_policy.A): a: first?forged log line; b: second: permission denied") {
		t.Fatalf("Check: %v", err)
	}
	long := strings.Repeat("x", 2*policy.MaxReasonBytes)
	if got := policy.BoundReason([]string{long}); len(got) != policy.MaxReasonBytes+3 {
		t.Fatalf("BoundReason kept %d bytes", len(got))
	}
}
