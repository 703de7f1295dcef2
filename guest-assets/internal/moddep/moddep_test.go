package moddep

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

const release = "6.1.0-test-amd64"

// fakeKo builds a minimal ELF64 relocatable file whose only content is a
// .modinfo section holding the given key=value strings.
func fakeKo(kv ...string) []byte {
	modinfo := []byte(strings.Join(append([]string{"vermagic=" + release + " SMP mod_unload"}, kv...), "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	off1 := ehsize
	off2 := off1 + len(modinfo)
	shoff := off2 + len(shstr)
	var b bytes.Buffer
	le := binary.LittleEndian
	ident := [16]byte{0x7f, 'E', 'L', 'F', 2, 1, 1}
	b.Write(ident[:])
	binary.Write(&b, le, uint16(1))      // ET_REL
	binary.Write(&b, le, uint16(62))     // EM_X86_64
	binary.Write(&b, le, uint32(1))      // version
	binary.Write(&b, le, uint64(0))      // entry
	binary.Write(&b, le, uint64(0))      // phoff
	binary.Write(&b, le, uint64(shoff))  // shoff
	binary.Write(&b, le, uint32(0))      // flags
	binary.Write(&b, le, uint16(ehsize)) // ehsize
	binary.Write(&b, le, uint16(0))      // phentsize
	binary.Write(&b, le, uint16(0))      // phnum
	binary.Write(&b, le, uint16(shentsize))
	binary.Write(&b, le, uint16(3)) // shnum
	binary.Write(&b, le, uint16(2)) // shstrndx
	b.Write(modinfo)
	b.Write(shstr)
	section := func(name, typ uint32, off, size int) {
		binary.Write(&b, le, name)
		binary.Write(&b, le, typ)
		binary.Write(&b, le, uint64(0)) // flags
		binary.Write(&b, le, uint64(0)) // addr
		binary.Write(&b, le, uint64(off))
		binary.Write(&b, le, uint64(size))
		binary.Write(&b, le, uint32(0)) // link
		binary.Write(&b, le, uint32(0)) // info
		binary.Write(&b, le, uint64(1)) // align
		binary.Write(&b, le, uint64(0)) // entsize
	}
	section(0, 0, 0, 0)
	section(1, 1, off1, len(modinfo)) // PROGBITS .modinfo
	section(10, 3, off2, len(shstr))  // STRTAB .shstrtab
	return b.Bytes()
}

// kernelTree writes a fake lib/modules/<release> tree.
func kernelTree(t *testing.T, files map[string][]byte, builtin ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), release)
	for rel, data := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(strings.Join(builtin, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func zst(t *testing.T, b []byte) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(b, nil)
}

func TestResolveOrderBuiltinsAndCompression(t *testing.T) {
	files := map[string][]byte{
		"kernel/net/vmw_vsock/vsock.ko":                                fakeKo("depends="),
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.gz": gz(fakeKo("depends=vsock")),
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.zst":       zst(t, fakeKo("depends=vmw_vsock_virtio_transport_common,vsock,virtio,virtio_ring")),
		"kernel/drivers/virtio/virtio_ring.ko":                         fakeKo("depends=virtio"),
		"kernel/fs/erofs/erofs.ko":                                     fakeKo("depends=lz4_decompress", "softdep=pre: crypto-crc32c post: nosuch-alias"),
		"kernel/lib/lz4/lz4_decompress.ko":                             fakeKo("depends="),
		"kernel/arch/x86/crypto/crc32c-intel.ko":                       fakeKo("depends=", "alias=crypto-crc32c"),
		"kernel/crypto/crc32c_generic.ko":                              fakeKo("depends=", "alias=crypto-crc32c"),
	}
	dir := kernelTree(t, files, "kernel/drivers/virtio/virtio.ko")
	ix, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	order, skipped, err := ix.Resolve([]string{"vmw_vsock_virtio_transport", "erofs", "virtio"})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(Names(order), " ")
	want := "vsock vmw_vsock_virtio_transport_common virtio_ring vmw_vsock_virtio_transport crc32c_generic lz4_decompress erofs"
	if got != want {
		t.Fatalf("order:\n got %s\nwant %s", got, want)
	}
	if len(skipped) != 1 || !strings.HasPrefix(skipped[0], "nosuch_alias") {
		t.Fatalf("skipped = %v, want the unknown alias nosuch-alias", skipped)
	}

	out := t.TempDir()
	manifest, err := Install(order, out, "/lib/modules/"+release, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(manifest), "/lib/modules/"+release+"/kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko\n") {
		t.Fatalf("manifest lacks the decompressed path:\n%s", manifest)
	}
	data, err := os.ReadFile(filepath.Join(out, "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko"))
	if err != nil || !bytes.HasPrefix(data, []byte("\x7fELF")) {
		t.Fatalf("installed module not decompressed: %v % x", err, data[:4])
	}
}

// A signed module loses exactly the signature, its descriptor and marker;
// an unsigned one is unchanged; a descriptor claiming more bytes than the
// module has is an error, not a panic.
func TestStripSignature(t *testing.T) {
	body := fakeKo("depends=")
	sig := bytes.Repeat([]byte{0xA5}, 300)
	desc := []byte{0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x2C} // PKCS#7, 300 bytes
	signed := append(append(append(append([]byte{}, body...), sig...), desc...), sigMagic...)
	got, had, err := StripSignature(signed)
	if err != nil || !had || !bytes.Equal(got, body) {
		t.Fatalf("StripSignature(signed) = %d bytes, %v, %v; want the %d-byte body", len(got), had, err, len(body))
	}
	if got, had, err := StripSignature(body); err != nil || had || !bytes.Equal(got, body) {
		t.Fatalf("StripSignature(unsigned) = %d bytes, %v, %v; want it unchanged", len(got), had, err)
	}
	bad := append(append([]byte("x"), 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x10, 0), sigMagic...)
	if _, _, err := StripSignature(bad); err == nil {
		t.Fatal("a signature longer than the module was accepted")
	}
}

func TestXZModule(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz not installed (scripts/install-deps.sh installs xz-utils); would read a .ko.xz module")
	}
	cmd := exec.Command("xz", "-c")
	cmd.Stdin = bytes.NewReader(fakeKo("depends="))
	xzData, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	ix, err := Open(kernelTree(t, map[string][]byte{"kernel/fs/overlayfs/overlay.ko.xz": xzData}))
	if err != nil {
		t.Fatal(err)
	}
	order, _, err := ix.Resolve([]string{"overlay"})
	if err != nil || len(order) != 1 || order[0].Rel != "kernel/fs/overlayfs/overlay.ko" {
		t.Fatalf("got %+v, %v", order, err)
	}
}

func TestResolveErrors(t *testing.T) {
	files := map[string][]byte{
		"kernel/a.ko":     fakeKo("depends=missing"),
		"kernel/b.ko":     fakeKo("depends=c"),
		"kernel/c.ko":     fakeKo("depends=b"),
		"kernel/wrong.ko": bytes.Replace(fakeKo(), []byte(release), []byte("6.1.0-tset-amd64"), 1),
	}
	ix, err := Open(kernelTree(t, files))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"nosuch": `"nosuch" is neither a module nor built into`,
		"a":      "a depends on missing",
		"b":      "cycle",
		"wrong":  "6.1.0-tset-amd64",
	} {
		_, _, err := ix.Resolve([]string{name})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", name, err, want)
		}
	}
	if _, err := Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no modules") {
		t.Errorf("empty dir: got %v", err)
	}
}

// TestDebianKernel resolves the real module set against the kernel that
// `make kernel` unpacked, when it is there.
func TestDebianKernel(t *testing.T) {
	dirs, _ := filepath.Glob("/var/cache/coco/kernel/*/root/lib/modules/*")
	if len(dirs) == 0 {
		t.Skip("no unpacked Debian kernel under /var/cache/coco/kernel (run `make kernel`); would resolve the guest's module closure")
	}
	ix, err := Open(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	order, skipped, err := ix.Resolve([]string{"vsock", "vmw_vsock_virtio_transport", "virtio_pci", "virtio_blk", "virtio_net", "erofs", "overlay"})
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Join(Names(order), " ")
	t.Logf("%s: %s (skipped softdeps: %v)", ix.Release(), names, skipped)
	for _, must := range []string{"vsock", "virtio_ring", "erofs", "overlay"} {
		if !strings.Contains(" "+names+" ", " "+must+" ") {
			t.Errorf("closure lacks %s", must)
		}
	}
	if strings.Index(names, "virtio_ring") > strings.Index(names, "virtio_net") {
		t.Errorf("virtio_ring must load before virtio_net: %s", names)
	}
}
