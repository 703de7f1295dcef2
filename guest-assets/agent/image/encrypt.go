package image

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/containers/ocicrypt/blockcipher"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// Encrypter encrypts images for the CoCo key provider: each layer with a
// fresh key (ocicrypt's AES-256-CTR + HMAC-SHA256), that key wrapped under
// KEK and stored with the key id Kid ("kbs:///default/key/x") — the KBS
// resource the guest will fetch KEK from. The result is what skopeo with
// coco_keyprovider makes, so either side can be swapped.
type Encrypter struct {
	Kid string
	KEK []byte // 32 bytes
}

// Image returns img with every layer encrypted (already encrypted layers
// are kept). The config, and so the diff_ids of the plaintext layers, is
// unchanged; the manifest becomes an OCI manifest (Docker manifests cannot
// carry the annotations). Encrypted layers are held in memory.
func (e Encrypter) Image(img v1.Image) (v1.Image, error) {
	if !strings.HasPrefix(e.Kid, "kbs:///") {
		return nil, fmt.Errorf("key id %q: want kbs:///<repo>/<type>/<tag>", e.Kid)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	out := &encImage{config: cfg, layers: map[v1.Hash]partial.CompressedLayer{}}
	nm := m.DeepCopy()
	nm.MediaType = types.OCIManifestSchema1
	if nm.Config.MediaType == types.DockerConfigJSON {
		nm.Config.MediaType = types.OCIConfigJSON
	}
	for i, d := range m.Layers {
		l, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, err
		}
		nd, enc, err := e.layer(l, d)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		nm.Layers[i] = nd
		out.layers[nd.Digest] = enc
	}
	if out.manifest, err = json.Marshal(nm); err != nil {
		return nil, err
	}
	return partial.CompressedToImage(out)
}

// encMediaType is the +encrypted type of a layer media type.
func encMediaType(mt types.MediaType) (types.MediaType, error) {
	switch mt {
	case types.DockerLayer, types.OCILayer:
		return "application/vnd.oci.image.layer.v1.tar+gzip+encrypted", nil
	case types.OCIUncompressedLayer:
		return "application/vnd.oci.image.layer.v1.tar+encrypted", nil
	case types.OCILayerZStd:
		return "application/vnd.oci.image.layer.v1.tar+zstd+encrypted", nil
	}
	return "", fmt.Errorf("media type %q cannot be encrypted", mt)
}

func (e Encrypter) layer(l v1.Layer, d v1.Descriptor) (v1.Descriptor, partial.CompressedLayer, error) {
	if strings.HasSuffix(string(d.MediaType), "+encrypted") {
		return d, l, nil
	}
	mt, err := encMediaType(d.MediaType)
	if err != nil {
		return d, nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return d, nil, err
	}
	defer rc.Close()
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return d, nil, err
	}
	r, fin, err := h.Encrypt(rc, blockcipher.AES256CTR)
	if err != nil {
		return d, nil, err
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return d, nil, err
	}
	opts, err := fin()
	if err != nil {
		return d, nil, err
	}
	opts.Private.Digest = digest.Digest(d.Digest.String())
	priv, err := json.Marshal(opts.Private)
	if err != nil {
		return d, nil, err
	}
	pub, err := json.Marshal(opts.Public)
	if err != nil {
		return d, nil, err
	}
	packet, err := wrapKey(e.Kid, e.KEK, priv)
	if err != nil {
		return d, nil, err
	}
	enc := static.NewLayer(buf.Bytes(), mt)
	nd := v1.Descriptor{MediaType: mt, Size: int64(buf.Len()), Annotations: map[string]string{}}
	if nd.Digest, err = enc.Digest(); err != nil {
		return d, nil, err
	}
	for k, v := range d.Annotations {
		nd.Annotations[k] = v
	}
	nd.Annotations[annotationKeys] = packet
	nd.Annotations[annotationPubOpts] = base64.StdEncoding.EncodeToString(pub)
	return nd, enc, nil
}

// Index encrypts every image of an index.
func (e Encrypter) Index(idx v1.ImageIndex) (v1.ImageIndex, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	out := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			return nil, fmt.Errorf("index entry %s: nested index not supported", d.Digest)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		enc, err := e.Image(img)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", d.Digest, err)
		}
		out = mutate.AppendManifests(out, mutate.IndexAddendum{
			Add:        enc,
			Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: d.Platform, Annotations: d.Annotations},
		})
	}
	return out, nil
}

// encImage is an image from raw manifest, config and layers.
type encImage struct {
	config, manifest []byte
	layers           map[v1.Hash]partial.CompressedLayer
}

func (i *encImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *encImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i *encImage) RawManifest() ([]byte, error)        { return i.manifest, nil }
func (i *encImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("blob %s not in the image", h)
}
