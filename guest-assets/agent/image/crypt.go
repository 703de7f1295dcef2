package image

// Encrypted layers, the CoCo way. A layer is encrypted by ocicrypt's layer
// block cipher (AES-256-CTR, HMAC-SHA256 over the ciphertext); its
// "private options" (the symmetric key, nonce and the plaintext blob's
// digest) are wrapped under a key-encryption key held by the KBS and stored
// in the layer's annotation
//
//	org.opencontainers.image.enc.keys.provider.attestation-agent =
//	  base64({"kid":"kbs:///default/key/x","wrapped_data":b64,"iv":b64,"wrap_type":"A256GCM"})
//
// (comma-separated if several), with the public options (cipher, HMAC) in
// org.opencontainers.image.enc.pubopts. wrapped_data is AES-256-GCM of the
// private options JSON under the KEK, the 16-byte tag appended, no AAD.
//
// We unwrap the annotation here and call ocicrypt's blockcipher package for
// the layer itself, instead of registering a keyprovider with ocicrypt's
// top-level package: that package keeps a process-global registry of key
// wrappers filled at init from OCICRYPT_KEYPROVIDER_CONFIG (which can name a
// program to exec), and its UnwrapKey has no context, so the KBS fetch could
// neither be cancelled with the pull nor be told which pod asks. The wrapping
// is a dozen lines; the cipher and its HMAC check stay ocicrypt's.

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containers/ocicrypt/blockcipher"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	annotationKeys    = "org.opencontainers.image.enc.keys.provider.attestation-agent"
	annotationPubOpts = "org.opencontainers.image.enc.pubopts"
	wrapType          = "A256GCM"
)

// packet is the annotation's JSON; provider and version are the v2 fields
// guest-components' parser also accepts.
type packet struct {
	Kid         string `json:"kid"`
	WrappedData []byte `json:"wrapped_data"`
	IV          []byte `json:"iv"`
	WrapType    string `json:"wrap_type"`
	Provider    string `json:"provider,omitempty"`
}

// KeyError is a layer whose key the KBS did not give (or gave wrong).
type KeyError struct {
	Layer string
	Kid   string
	Err   error
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("layer %s: decryption key %s: %v", e.Layer, e.Kid, e.Err)
}

func (e *KeyError) Unwrap() error { return e.Err }

// unwrapKey returns the layer's private options JSON, trying each packet of
// the annotation in turn; the error names the layer and every kid tried.
func unwrapKey(ctx context.Context, desc v1.Descriptor, keys KeyFetcher) ([]byte, error) {
	ann := desc.Annotations[annotationKeys]
	if ann == "" {
		return nil, fmt.Errorf("layer %s is encrypted but has no %s annotation (only the CoCo KBS key provider is supported)", desc.Digest, annotationKeys)
	}
	var errs []error
	for _, b64 := range strings.Split(ann, ",") {
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			errs = append(errs, fmt.Errorf("layer %s: key annotation is not base64", desc.Digest))
			continue
		}
		var p packet
		if err := json.Unmarshal(raw, &p); err != nil {
			errs = append(errs, fmt.Errorf("layer %s: key annotation: %v", desc.Digest, err))
			continue
		}
		opts, err := p.unwrap(ctx, keys)
		if err == nil {
			return opts, nil
		}
		errs = append(errs, &KeyError{Layer: desc.Digest.String(), Kid: p.Kid, Err: err})
	}
	return nil, errors.Join(errs...)
}

func (p *packet) unwrap(ctx context.Context, keys KeyFetcher) ([]byte, error) {
	if p.Provider != "" && p.Provider != "kbs" {
		return nil, fmt.Errorf("key provider %q is not supported (only kbs)", p.Provider)
	}
	if p.WrapType != wrapType {
		return nil, fmt.Errorf("wrap_type %q is not supported (only %s)", p.WrapType, wrapType)
	}
	if !strings.HasPrefix(p.Kid, "kbs:///") {
		return nil, errors.New("kid is not a kbs:/// resource")
	}
	kek, err := keys(ctx, p.Kid)
	if err != nil {
		return nil, fmt.Errorf("refused by the KBS: %w", err)
	}
	kek, err = kekBytes(kek)
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(kek, len(p.IV))
	if err != nil {
		return nil, err
	}
	opts, err := gcm.Open(nil, p.IV, p.WrappedData, nil)
	if err != nil {
		return nil, errors.New("the KBS key does not unwrap the layer key (wrong key)")
	}
	return opts, nil
}

// kekBytes accepts the key as 32 raw bytes, as the CoCo test KBS stores it,
// or as the base64 of 32 bytes, as users often upload it.
func kekBytes(k []byte) ([]byte, error) {
	if len(k) == 32 {
		return k, nil
	}
	if d, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(k))); err == nil && len(d) == 32 {
		return d, nil
	}
	return nil, fmt.Errorf("the KBS key is %d bytes, not a 32-byte AES-256 key", len(k))
}

func newGCM(key []byte, ivLen int) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if ivLen == 12 {
		return cipher.NewGCM(block)
	}
	if ivLen < 12 {
		return nil, fmt.Errorf("iv of %d bytes is too short", ivLen)
	}
	return cipher.NewGCMWithNonceSize(block, ivLen)
}

// decryptLayer returns the plaintext blob reader and the digest the wrapped
// options promise for it ("" if none). ocicrypt withholds the last bytes
// until the HMAC checked out at EOF.
func decryptLayer(r io.Reader, desc v1.Descriptor, privOpts []byte) (io.Reader, string, error) {
	var priv blockcipher.PrivateLayerBlockCipherOptions
	if err := json.Unmarshal(privOpts, &priv); err != nil {
		return nil, "", fmt.Errorf("unwrapped layer key: %v", err)
	}
	var pub blockcipher.PublicLayerBlockCipherOptions
	b64 := desc.Annotations[annotationPubOpts]
	if b64 == "" {
		return nil, "", fmt.Errorf("encrypted layer has no %s annotation", annotationPubOpts)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, "", fmt.Errorf("%s: not base64", annotationPubOpts)
	}
	if err := json.Unmarshal(raw, &pub); err != nil {
		return nil, "", fmt.Errorf("%s: %v", annotationPubOpts, err)
	}
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return nil, "", err
	}
	dec, _, err := h.Decrypt(r, blockcipher.LayerBlockCipherOptions{Public: pub, Private: priv})
	if err != nil {
		return nil, "", err
	}
	return dec, priv.Digest.String(), nil
}

// wrapKey makes the annotation packet for privOpts under kek.
func wrapKey(kid string, kek, privOpts []byte) (string, error) {
	if len(kek) != 32 {
		return "", fmt.Errorf("key-encryption key is %d bytes, not 32", len(kek))
	}
	gcm, err := newGCM(kek, 12)
	if err != nil {
		return "", err
	}
	iv := make([]byte, 12)
	if _, err := rand.Read(iv); err != nil {
		return "", err
	}
	p := packet{Kid: kid, WrappedData: gcm.Seal(nil, iv, privOpts, nil), IV: iv, WrapType: wrapType}
	raw, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

// KEKBytes reads a key-encryption key file's content: 32 raw bytes or their
// base64 (returned unchanged if it is neither; Encrypter then says why).
func KEKBytes(k []byte) []byte {
	if d, err := kekBytes(k); err == nil {
		return d
	}
	return k
}
