package initrd

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// record is one parsed newc record.
type record struct {
	name                   string
	ino, mode, uid, gid    uint32
	nlink, mtime, maj, min uint32
	body                   []byte
}

// parseNewc is an independent reader used to check what Write produced.
func parseNewc(t *testing.T, b []byte) []record {
	t.Helper()
	var out []record
	off := 0
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d: %v", i, err)
			}
			return uint32(v)
		}
		namesize := int(field(11))
		size := int(field(6))
		nameStart := off + 110
		name := string(b[nameStart : nameStart+namesize-1])
		if b[nameStart+namesize-1] != 0 {
			t.Fatalf("name %q not NUL terminated", name)
		}
		dataStart := nameStart + namesize
		dataStart += (4 - dataStart%4) % 4
		r := record{name: name, ino: field(0), mode: field(1), uid: field(2), gid: field(3),
			nlink: field(4), mtime: field(5), maj: field(9), min: field(10),
			body: b[dataStart : dataStart+size]}
		off = dataStart + size
		off += (4 - off%4) % 4
		if name == trailer {
			if off != len(b) {
				t.Fatalf("%d bytes after trailer", len(b)-off)
			}
			return out
		}
		out = append(out, r)
	}
}

func sample() []Entry {
	return []Entry{
		{Path: "/usr/bin/runc", Mode: 0o755, Data: []byte("runc binary")},
		{Path: "/init", Mode: 0o755, Data: []byte("agent")},
		Symlink("/sbin/init", "/init"),
		CharDevice("/dev/console", 0o600, 5, 1),
		Dir("/tmp", 0o1777),
		{Path: "etc/coco/modules", Mode: 0o644, Data: []byte("/lib/modules/x/vsock.ko\n")},
		{Path: "/empty", Mode: 0o644},
	}
}

func build(t *testing.T, entries []Entry, compression string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, entries, compression); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteParsesBack(t *testing.T) {
	recs := parseNewc(t, build(t, sample(), None))
	var names []string
	for i, r := range recs {
		names = append(names, r.name)
		if r.ino != uint32(i+1) || r.uid != 0 || r.gid != 0 || r.mtime != 0 {
			t.Errorf("%s: ino=%d uid=%d gid=%d mtime=%d, want %d/0/0/0", r.name, r.ino, r.uid, r.gid, r.mtime, i+1)
		}
	}
	want := "dev dev/console empty etc etc/coco etc/coco/modules init sbin sbin/init tmp usr usr/bin usr/bin/runc"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("names:\n got %s\nwant %s", got, want)
	}
	byName := map[string]record{}
	for _, r := range recs {
		byName[r.name] = r
	}
	checks := []struct {
		name string
		mode uint32
		body string
	}{
		{"usr/bin/runc", 0o100755, "runc binary"},
		{"usr/bin", 0o040755, ""},
		{"sbin/init", 0o120777, "/init"},
		{"dev/console", 0o020600, ""},
		{"tmp", 0o041777, ""},
		{"empty", 0o100644, ""},
	}
	for _, c := range checks {
		r := byName[c.name]
		if r.mode != c.mode || string(r.body) != c.body {
			t.Errorf("%s: mode %o body %q, want %o %q", c.name, r.mode, r.body, c.mode, c.body)
		}
	}
	if c := byName["dev/console"]; c.maj != 5 || c.min != 1 {
		t.Errorf("dev/console rdev %d:%d, want 5:1", c.maj, c.min)
	}
}

func TestReproducible(t *testing.T) {
	for _, comp := range []string{None, Gzip} {
		a := build(t, sample(), comp)
		// Same entries in another order must give the same bytes.
		rev := sample()
		for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
			rev[i], rev[j] = rev[j], rev[i]
		}
		b := build(t, rev, comp)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: two builds differ (%d vs %d bytes)", comp, len(a), len(b))
		}
	}
}

func TestGzipHeaderAndContent(t *testing.T) {
	z := build(t, sample(), Gzip)
	// Bytes 4..7 are MTIME, byte 3 FLG (no FNAME/FCOMMENT), byte 9 OS.
	if z[3] != 0 || !bytes.Equal(z[4:8], []byte{0, 0, 0, 0}) || z[9] != 255 {
		t.Fatalf("gzip header carries host data: % x", z[:10])
	}
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, build(t, sample(), None)) {
		t.Fatal("gzip content differs from the uncompressed archive")
	}
}

func TestErrors(t *testing.T) {
	cases := map[string][]Entry{
		"listed twice":     {{Path: "/a", Mode: 0o644}, {Path: "a", Mode: 0o644}},
		"not clean":        {{Path: "/a/../b", Mode: 0o644}},
		"empty path":       {{Path: "/", Mode: 0o644}},
		"not a directory":  {{Path: "/a", Mode: 0o644}, {Path: "/a/b", Mode: 0o644}},
		"without Link":     {{Path: "/l", Mode: fs.ModeSymlink}},
		"unsupported file": {{Path: "/p", Mode: fs.ModeNamedPipe}},
	}
	for want, entries := range cases {
		err := Write(io.Discard, entries, None)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got error %v", want, err)
		}
	}
	if err := Write(io.Discard, sample(), "lz4"); err == nil || !strings.Contains(err.Error(), `"lz4"`) {
		t.Errorf("unknown compression: got %v", err)
	}
}

func TestTree(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "kernel/fs"), 0o700))
	must(os.WriteFile(filepath.Join(dir, "kernel/fs/erofs.ko"), []byte("ko"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "tool"), []byte("x"), 0o700))
	must(os.Symlink("tool", filepath.Join(dir, "alias")))
	entries, err := Tree("/lib/modules/6.1", dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Path] = fmt.Sprintf("%v %s%s", e.Mode, e.Data, e.Link)
	}
	want := map[string]string{
		"/lib/modules/6.1":                    "drwxr-xr-x ",
		"/lib/modules/6.1/kernel":             "drwxr-xr-x ",
		"/lib/modules/6.1/kernel/fs":          "drwxr-xr-x ",
		"/lib/modules/6.1/kernel/fs/erofs.ko": "-rw-r--r-- ko",
		"/lib/modules/6.1/tool":               "-rwxr-xr-x x",
		"/lib/modules/6.1/alias":              "Lrwxrwxrwx tool",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Tree:\n got %v\nwant %v", got, want)
	}
}

// TestCpioToolReadsIt cross-checks the archive with GNU cpio, an
// implementation that shares no code with this package.
func TestCpioToolReadsIt(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed (scripts/install-deps.sh installs it); would list the archive with GNU cpio")
	}
	cmd := exec.Command("cpio", "-it", "--quiet")
	cmd.Stdin = bytes.NewReader(build(t, sample(), None))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	if got := strings.Fields(string(out)); len(got) != 13 || got[len(got)-1] != "usr/bin/runc" {
		t.Fatalf("cpio listed %q", got)
	}
}
