//go:build linux

package scratch

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// The table is one dm_target_spec (40 bytes: start, length, status, next,
// type) with the parameters after it, NUL-terminated and padded to 8.
func TestCryptTarget(t *testing.T) {
	params := []byte("aes-xts-plain64 00ff 0 /dev/vdc 0")
	b := cryptTarget(2048, params)
	if len(b)%8 != 0 || len(b) < 40+len(params)+1 {
		t.Fatalf("%d bytes", len(b))
	}
	if binary.NativeEndian.Uint64(b[0:]) != 0 || binary.NativeEndian.Uint64(b[8:]) != 2048 {
		t.Fatal("start/length")
	}
	if int(binary.NativeEndian.Uint32(b[20:])) != len(b) {
		t.Fatalf("next = %d, want %d", binary.NativeEndian.Uint32(b[20:]), len(b))
	}
	if string(bytes.TrimRight(b[24:40], "\x00")) != "crypt" || !bytes.Equal(b[40:40+len(params)], params) || b[40+len(params)] != 0 {
		t.Fatalf("type or params: %q", b[24:])
	}
}

// The header is what mkswap writes for a version-1 swap area.
func TestSwapHeader(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(p, make([]byte, 8*pageSize), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeSwapHeader(p, 8*pageSize); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if string(b[pageSize-10:pageSize]) != "SWAPSPACE2" || binary.NativeEndian.Uint32(b[1024:]) != 1 || binary.NativeEndian.Uint32(b[1028:]) != 7 {
		t.Fatalf("header: version %d, last page %d, magic %q", binary.NativeEndian.Uint32(b[1024:]), binary.NativeEndian.Uint32(b[1028:]), b[pageSize-10:pageSize])
	}
}
