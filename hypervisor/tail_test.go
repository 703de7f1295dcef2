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
	if err != nil || got != "ok\n\tred31m?" {
		t.Fatalf("Tail = %q, %v", got, err)
	}
}

// SeaBIOS clears the screen before the kernel prints: nothing of its
// escape sequences may be left in a boot error.
func TestTailDropsWholeEscapeSequences(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(p, []byte("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.3)\r\nBooting from ROM..coco-agent: ready\r\n\x1b(Bplain\n"), 0o644)
	got, err := Tail(p, 5)
	if err != nil || got != "SeaBIOS (version 1.16.3)\nBooting from ROM..coco-agent: ready\nplain" {
		t.Fatalf("Tail = %q, %v", got, err)
	}
}
