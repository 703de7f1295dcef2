//go:build integration

// The boot test starts the guest kernel from build/guest under QEMU (TCG)
// with a tiny initrd whose /init is guest-assets/internal/testinit: the
// kernel's PVH entry, the initrd format, the module closure and the kmod
// loader are all exercised for real. Needs `make kernel` first.

package boottest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coco-runtime/coco/guest-assets/initrd"
	"github.com/coco-runtime/coco/guest-assets/internal/layout"
)

// assets is build/guest, or COCO_GUEST_DIR (e.g. an own-kernel build made
// with GUEST_OUT=build/guest-own, next to the default assets).
var assets = func() string {
	if d := os.Getenv("COCO_GUEST_DIR"); d != "" {
		return d
	}
	return "../../../build/guest"
}()

// bootResult is what one boot showed.
type bootResult struct {
	bootMs, modulesMs int // guest clock: uptime when init ran, module load time
	wall              time.Duration
	console           string
}

var markerRE = regexp.MustCompile(`COCO-TESTINIT ok boot_ms=(\d+) modules_ms=(\d+) fs=erofs,overlay vsock=ok disk=vda`)

// buildInitrd builds testinit and an initrd around it in dir. With
// fullSize, the real crun and coco-agent (when built) ride along as plain
// files so the initrd has the size of the real one.
func buildInitrd(tb testing.TB, dir, compression string, fullSize bool) string {
	tb.Helper()
	for _, f := range []string{"vmlinux", "vmlinuz", "modules.manifest"} {
		if _, err := os.Stat(filepath.Join(assets, f)); err != nil {
			tb.Skipf("%s/%s missing (run `make kernel`); would boot the guest kernel with a test init", assets, f)
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		tb.Skip("qemu-system-x86_64 not installed (scripts/install-deps.sh); would boot the guest kernel")
	}
	initBin := filepath.Join(dir, "testinit")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", initBin, "../testinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building testinit: %v\n%s", err, out)
	}
	in := layout.Inputs{Init: initBin, Assets: assets, Extra: map[string]string{}}
	if fullSize {
		for _, f := range []string{"crun", "coco-agent"} {
			if _, err := os.Stat(filepath.Join(assets, f)); err == nil {
				in.Extra["/ballast/"+f] = filepath.Join(assets, f)
			}
		}
	}
	entries, err := layout.Entries(in)
	if err != nil {
		tb.Fatal(err)
	}
	img := filepath.Join(dir, fmt.Sprintf("initrd-%s-%v.img", compression, fullSize))
	f, err := os.Create(img)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := initrd.Write(f, entries, compression); err != nil {
		tb.Fatal(err)
	}
	return img
}

// boot runs QEMU until the guest powers off. A virtio-blk disk is attached
// so the test init can check that virtio_pci + virtio_blk probe it.
// With icount, the guest clock counts instructions (1 ns each), so the guest
// times do not depend on how busy the host is.
func boot(tb testing.TB, dir, kernel, initrdPath string, icount bool, params ...string) bootResult {
	tb.Helper()
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{
		"-M", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrdPath,
		"-append", strings.Join(append([]string{"console=ttyS0 quiet panic=-1 cocotest_disk=vda"}, params...), " "),
		"-drive", "file=" + disk + ",if=none,id=d0,format=raw,readonly=on",
		"-device", "virtio-blk-pci,drive=d0",
	}
	if icount {
		args = append(args, "-icount", "shift=0")
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if ctx.Err() != nil {
		tb.Fatalf("QEMU did not exit by itself within 2 minutes (guest did not power off)\n%s", out.String())
	}
	if err != nil {
		tb.Fatalf("QEMU: %v\n%s", err, out.String())
	}
	m := markerRE.FindStringSubmatch(out.String())
	if m == nil {
		tb.Fatalf("no success marker on the console:\n%s", out.String())
	}
	bootMs, _ := strconv.Atoi(m[1])
	modMs, _ := strconv.Atoi(m[2])
	return bootResult{bootMs: bootMs, modulesMs: modMs, wall: wall, console: out.String()}
}

// TestBoot boots the uncompressed vmlinux by PVH (the fast path under TCG)
// and the bzImage (the firmware/TEE path) with the same initrd.
func TestBoot(t *testing.T) {
	dir := t.TempDir()
	img := buildInitrd(t, dir, initrd.None, false)
	release, _ := os.ReadFile(filepath.Join(assets, "kernel.release"))
	for _, kernel := range []string{"vmlinux", "vmlinuz"} {
		t.Run(kernel, func(t *testing.T) {
			r := boot(t, dir, filepath.Join(assets, kernel), img, false)
			t.Logf("%s %s: init started at %d ms guest uptime, modules loaded in %d ms, QEMU wall %.2f s",
				bytes.TrimSpace(release), kernel, r.bootMs, r.modulesMs, r.wall.Seconds())
		})
	}
}

// BenchmarkBoot compares initrd compressions and kernel formats under TCG
// with -icount, with an initrd as large as the real one:
//
//	go test -tags integration -run '^$' -bench Boot -benchtime 3x ./guest-assets/internal/boottest/
func BenchmarkBoot(b *testing.B) {
	dir := b.TempDir()
	for _, c := range []struct{ kernel, compression string }{
		{"vmlinux", initrd.None}, {"vmlinux", initrd.Gzip}, {"vmlinuz", initrd.None},
	} {
		img := buildInitrd(b, dir, c.compression, true)
		if fi, err := os.Stat(img); err == nil {
			b.Logf("%s: %d bytes", filepath.Base(img), fi.Size())
		}
		b.Run(fmt.Sprintf("%s/initrd=%s", c.kernel, c.compression), func(b *testing.B) {
			var guestMs int
			for i := 0; i < b.N; i++ {
				guestMs += boot(b, dir, filepath.Join(assets, c.kernel), img, true).bootMs
			}
			// Guest uptime at init under -icount: deterministic, but it
			// leaves out a bzImage's self-decompression (before the clock
			// starts); ns/op (wall) includes it.
			b.ReportMetric(float64(guestMs)/float64(b.N), "icount-guest-ms-to-init/op")
		})
	}
}
