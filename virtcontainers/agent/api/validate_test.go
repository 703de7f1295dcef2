package api

import (
	"regexp"
	"strings"
	"testing"
)

// The patterns the hand-written name checks implement (see validate.go).
var namePatterns = []struct {
	name  string
	check func(string) bool
	re    string
}{
	{"id", isID, `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`},
	{"serial", isSerial, `^[a-zA-Z0-9_-]{1,20}$`},
	{"hostname", isHostname, `^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$`},
	{"sysctl", isSysctlName, `^[a-zA-Z0-9_][a-zA-Z0-9_.\-/]{0,254}$`},
}

func TestNameChecksMatchPatterns(t *testing.T) {
	inputs := []string{
		"", "a", "Z9", "_", "-", ".", "/", "a-", "-a", "a.b", "a..b", "a/b", "_a", "a_", "a b", "a\n", "\na",
		"é", "aé", "a\x00", "abc-DEF_123.x", "net.ipv4.ip_forward", "kernel/shm", "0", "a.", ".a",
	}
	for _, n := range []int{19, 20, 21, 127, 128, 129, 254, 255, 256} {
		inputs = append(inputs, strings.Repeat("a", n), "_"+strings.Repeat("b", n-1), strings.Repeat("a", n-1)+"-")
	}
	for _, p := range namePatterns {
		re := regexp.MustCompile(p.re)
		for _, s := range inputs {
			if got, want := p.check(s), re.MatchString(s); got != want {
				t.Errorf("%s(%q) = %v, pattern %s says %v", p.name, s, got, p.re, want)
			}
		}
	}
}

func FuzzNameChecks(f *testing.F) {
	for _, s := range []string{"a", "a-b.c_d", "net.core/x", "-", strings.Repeat("x", 130)} {
		f.Add(s)
	}
	res := make([]*regexp.Regexp, len(namePatterns))
	for i, p := range namePatterns {
		res[i] = regexp.MustCompile(p.re)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i, p := range namePatterns {
			if got, want := p.check(s), res[i].MatchString(s); got != want {
				t.Fatalf("%s(%q) = %v, pattern %s says %v", p.name, s, got, p.re, want)
			}
		}
	})
}
