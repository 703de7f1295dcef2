package mkfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// e2fsck, the reference checker, finds nothing to fix in what Format
// writes, for one group, several, and a short last group left out or kept.
func TestFormatPassesE2fsck(t *testing.T) {
	fsck, err := exec.LookPath("e2fsck")
	if err != nil {
		t.Skip("e2fsck not installed (e2fsprogs)")
	}
	for _, size := range []int64{1 << 20, 3<<20 + 4096*5, 64 << 20, 128 << 20, 200 << 20, 128<<20 + 4096*9, 1 << 30} {
		p := filepath.Join(t.TempDir(), "disk")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		// Noise where Format does not write: a fresh dm-crypt mapping
		// reads like this, so nothing may rely on zeroes it did not write.
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		noise := make([]byte, 64<<10)
		for i := range noise {
			noise[i] = byte(i*7 + 13)
		}
		// Over each group's metadata and unused inode table.
		for g := int64(0); g*blocksPerGroup*blockSize < size; g++ {
			start := g * blocksPerGroup * blockSize
			for off := start; off < size && off < start+2<<20; off += int64(len(noise)) {
				f.WriteAt(noise, off)
			}
		}
		l, err := Format(f, size)
		f.Close()
		if err != nil {
			t.Fatalf("%d: %v", size, err)
		}
		out, err := exec.Command(fsck, "-fn", p).CombinedOutput()
		if err != nil {
			t.Errorf("size %d (%+v): e2fsck: %v\n%s", size, l, err, out)
		}
	}
	if _, err := Format(nopWriter{}, 1<<19); err == nil {
		t.Error("512 KiB formatted")
	}
}

type nopWriter struct{}

func (nopWriter) WriteAt(b []byte, _ int64) (int, error) { return len(b), nil }
