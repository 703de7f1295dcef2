package image

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkPull50MB pulls and unpacks a ~50 MB image (5 gzip layers of ten
// 1 MiB files, half random bytes, half text) from the in-process registry
// into a fresh store each time; plain and encrypted.
func BenchmarkPull50MB(b *testing.B) {
	reg := newRegistry(b)
	rng := rand.New(rand.NewPCG(1, 2))
	var layers []v1Layer
	for l := range 5 {
		var es []entry
		for f := range 10 {
			buf := make([]byte, 1<<20)
			for i := range buf {
				if i < len(buf)/2 {
					buf[i] = byte(rng.Uint32())
				} else {
					buf[i] = "abcdefgh ijklmnop\n"[i%18]
				}
			}
			es = append(es, file(fmt.Sprintf("l%d/f%d", l, f), string(buf)))
		}
		layers = append(layers, layer(b, false, es...))
	}
	img := image(b, nil, layers...)
	reg.push(b, reg.ref("big:plain"), img)
	kek := make([]byte, 32)
	enc, err := Encrypter{Kid: "kbs:///default/key/b", KEK: kek}.Image(img)
	if err != nil {
		b.Fatal(err)
	}
	reg.push(b, reg.ref("big:enc"), enc)
	keys := func(_ ctxT, _ string) ([]byte, error) { return kek, nil }
	for _, tag := range []string{"plain", "enc"} {
		b.Run(tag, func(b *testing.B) {
			if os.Geteuid() != 0 {
				b.Skip("needs root")
			}
			b.SetBytes(50 << 20)
			dir := b.TempDir()
			n := 0
			for b.Loop() {
				n++
				s, err := NewStore(filepath.Join(dir, fmt.Sprint(n)), 0)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Pull(bg, reg.ref("big:"+tag), PullOptions{Registry: reg.reg(), Keys: keys}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(s.Root())
				b.StartTimer()
			}
		})
	}
}
