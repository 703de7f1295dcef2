package initdata

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds arbitrary annotation values to Decode. It must never
// panic or allocate without bound, and whatever it accepts must be
// self-consistent: re-parsing the raw bytes gives the same digest, and the
// block image round-trips.
func FuzzDecode(f *testing.F) {
	for _, alg := range Algorithms() {
		f.Add(Encode(doc(string(alg))))
	}
	f.Add(Encode([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n")))
	f.Add(Encode([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nx = 1\n")))
	f.Add(Encode([]byte("[[data]]\n")))
	f.Add("H4sIAAAAAAAA/w==")
	f.Add("")
	f.Fuzz(func(t *testing.T, ann string) {
		id, err := Decode(ann)
		if err != nil {
			return
		}
		if len(id.Raw()) > MaxSize {
			t.Fatalf("accepted %d bytes", len(id.Raw()))
		}
		again, err := Parse(id.Raw())
		if err != nil {
			t.Fatalf("accepted document fails to re-parse: %v", err)
		}
		if !bytes.Equal(again.Digest(), id.Digest()) || len(id.Digest()) != id.Algorithm.Size() {
			t.Fatal("digest not stable")
		}
		img, err := BlockImage(id.Raw())
		if err != nil {
			t.Fatalf("block image of an accepted document: %v", err)
		}
		raw, err := ReadBlockImage(bytes.NewReader(img))
		if err != nil || !bytes.Equal(raw, id.Raw()) {
			t.Fatalf("block image round trip: %v", err)
		}
	})
}
