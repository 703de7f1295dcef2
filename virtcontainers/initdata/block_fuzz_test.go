package initdata

import (
	"bytes"
	"testing"
)

// FuzzReadBlockImage: the guest reads a disk the untrusted host wrote. Any
// content must give an error or a document within the limits.
func FuzzReadBlockImage(f *testing.F) {
	img, err := BlockImage(doc("sha256"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(img)
	f.Add([]byte("initdata\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Add([]byte("initdata\x10\x00\x00\x00\x00\x00\x00\x00\x1f\x8b"))
	f.Fuzz(func(t *testing.T, b []byte) {
		raw, err := ReadBlockImage(bytes.NewReader(b))
		if err == nil && len(raw) > MaxSize {
			t.Fatalf("read %d bytes", len(raw))
		}
	})
}
