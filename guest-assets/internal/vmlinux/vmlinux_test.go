package vmlinux

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBzImage builds just enough of a boot header around payload.
func fakeBzImage(payload []byte) []byte {
	const setupSects = 1
	img := make([]byte, (setupSects+1)*512+16)
	img[offSetupSects] = setupSects
	copy(img[offHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[offVersion:], 0x20f)
	binary.LittleEndian.PutUint32(img[offPayloadOffset:], 16)
	binary.LittleEndian.PutUint32(img[offPayloadLength:], uint32(len(payload)))
	return append(img, payload...)
}

func TestPayload(t *testing.T) {
	p, err := Payload(fakeBzImage([]byte("compressed")))
	if err != nil || string(p) != "compressed" {
		t.Fatalf("got %q, %v", p, err)
	}
	if _, err := Payload(make([]byte, 4096)); err == nil || !strings.Contains(err.Error(), "HdrS") {
		t.Fatalf("not a bzImage: got %v", err)
	}
	bad := fakeBzImage([]byte("x"))
	binary.LittleEndian.PutUint32(bad[offPayloadLength:], 1<<20)
	if _, err := Payload(bad); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("truncated: got %v", err)
	}
}

func TestExtractRejectsNonPVH(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte("not an elf"))
	zw.Close()
	if _, err := Extract(fakeBzImage(z.Bytes())); err == nil || !strings.Contains(err.Error(), "not ELF") {
		t.Fatalf("got %v", err)
	}
	if _, err := Extract(fakeBzImage([]byte("BZh91AY"))); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("bzip2 payload: got %v", err)
	}
}

func TestHasNote(t *testing.T) {
	le := binary.LittleEndian
	note := func(name string, typ uint32, desc []byte) []byte {
		var b bytes.Buffer
		binary.Write(&b, le, uint32(len(name)+1))
		binary.Write(&b, le, uint32(len(desc)))
		binary.Write(&b, le, typ)
		n := append([]byte(name), 0)
		for len(n)%4 != 0 {
			n = append(n, 0)
		}
		b.Write(n)
		b.Write(desc)
		return b.Bytes()
	}
	data := append(note("GNU", 3, make([]byte, 20)), note("Xen", 18, make([]byte, 4))...)
	if !hasNote(data, "Xen", 18, le) {
		t.Fatal("PVH note not found")
	}
	if hasNote(data[:len(data)-4], "Xen", 18, le) {
		t.Fatal("truncated note accepted")
	}
}

// TestDebianKernel checks the real bzImage that `make kernel` fetched.
func TestDebianKernel(t *testing.T) {
	imgs, _ := filepath.Glob("/var/cache/coco/kernel/*/root/boot/vmlinuz-*")
	if len(imgs) == 0 {
		t.Skip("no Debian kernel under /var/cache/coco/kernel (run `make kernel`); would extract its vmlinux and check the PVH note")
	}
	bz, err := os.ReadFile(imgs[0])
	if err != nil {
		t.Fatal(err)
	}
	p, err := Payload(bz)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(p, magicXZ) {
		t.Fatalf("Debian payload is not xz: % x", p[:6])
	}
	// The first xz magic in the file is where DESIGN §3.8 says the payload is.
	if i := bytes.Index(bz, magicXZ); &bz[i] != &p[0] {
		t.Fatalf("payload at a different offset than the first xz magic (%d)", i)
	}
	img, err := Extract(bz)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: vmlinux %d bytes from a %d-byte bzImage", filepath.Base(imgs[0]), len(img), len(bz))
}
