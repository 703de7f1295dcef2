package hypervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(p, []byte("one\r\ntwo\r\nthree\r\n"), 0o644)
	if got, err := Tail(p, 2); err != nil || got != "two\nthree" {
		t.Fatalf("Tail = %q, %v", got, err)
	}
	big := strings.Repeat("x", tailWindow) + "\nlast\n"
	os.WriteFile(p, []byte(big), 0o644)
	if got, _ := Tail(p, 1); got != "last" {
		t.Fatalf("Tail of a large file = %q", got)
	}
	os.WriteFile(p, nil, 0o644)
	if got, err := Tail(p, 5); err != nil || got != "" {
		t.Fatalf("empty file: %q, %v", got, err)
	}
	if _, err := Tail(p+".missing", 5); err == nil {
		t.Fatal("missing file: no error")
	}
}

// A guest's console can carry terminal escapes; an error message that
// quotes it must not.
func TestTailDropsControlBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(p, []byte("ok\r\n\x1b]0;pwned\x07\x1b[2J\tred\u009b31m\x00\xff\n"), 0o644)
	got, err := Tail(p, 5)
	if err != nil || got != "ok\n]0;pwned[2J\tred31m?" {
		t.Fatalf("Tail = %q, %v", got, err)
	}
}
