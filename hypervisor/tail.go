package hypervisor

import (
	"bytes"
	"os"
	"regexp"
	"strings"
)

// tailWindow bounds how much of a log Tail reads: a guest console can grow
// for the life of the pod, an error message needs only its end.
const tailWindow = 64 << 10

// escapeSeq matches terminal escape sequences: CSI (ESC [ parameters final
// byte), OSC (ESC ] ... BEL or ESC \\), and two-byte ESC sequences.
var escapeSeq = regexp.MustCompile(`\x1b(\[[0-9;?<=>!]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_]|[ -/][0-~]|c)`)

// Tail returns the last n lines of the log at path (a guest console or a
// VMM log) for an error message: carriage returns dropped, invalid UTF-8
// replaced, other control characters but tabs dropped, and at most the last
// 64 KiB read. An empty file gives "".
func Tail(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := max(fi.Size()-tailWindow, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && len(b) > 0 {
		return "", err
	}
	// Serial consoles emit \r\n; keep lines clean for error messages. The
	// text is the guest's: other control bytes (terminal escapes that would
	// act on the terminal of whoever reads the error) are dropped too.
	// Escape sequences go whole (firmware clears the screen with them), so
	// that no "[2J" is left of them in an error.
	b = escapeSeq.ReplaceAll(b, nil)
	s := strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || (r >= 0x20 && r != 0x7f && (r < 0x80 || r > 0x9f)) {
			return r
		}
		return -1
	}, string(bytes.ToValidUTF8(b, []byte("?"))))
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "", nil
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n"), nil
}
