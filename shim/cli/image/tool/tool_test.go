package tool

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// encrypt turns an OCI layout into one whose layers are +encrypted and carry
// the CoCo key annotation.
func TestEncryptLayout(t *testing.T) {
	dir := t.TempDir()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	p, err := layout.Write(filepath.Join(dir, "in"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "kek")
	os.WriteFile(key, bytes.Repeat([]byte{1}, 32), 0o600)
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"encrypt", "--key-id", "kbs:///default/key/t", "--key-file", key,
		"oci:" + filepath.Join(dir, "in"), "oci:" + filepath.Join(dir, "out")}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	idx, err := layout.ImageIndexFromPath(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	enc, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := enc.Manifest()
	for _, l := range m.Layers {
		if !strings.HasSuffix(string(l.MediaType), "+encrypted") || l.Annotations["org.opencontainers.image.enc.keys.provider.attestation-agent"] == "" {
			t.Errorf("layer %s: %s %v", l.Digest, l.MediaType, l.Annotations)
		}
	}
	var _ v1.Image = enc
	if code := Main(context.Background(), []string{"encrypt", "x"}, &out, &errb); code != 2 {
		t.Errorf("bad usage: exit %d", code)
	}
}
