package image

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// Sign signs what ref resolves to now (a tag: its current digest) the way
// `cosign sign --key` does without a transparency log, and pushes the
// signature to <repo>:sha256-<hex>.sig, keeping signatures already there.
// It returns the signed digest.
func Sign(ctx context.Context, ref string, key crypto.Signer, reg Registry) (string, error) {
	c, err := reg.client()
	if err != nil {
		return "", err
	}
	r, err := c.parse(ref)
	if err != nil {
		return "", err
	}
	desc, err := remote.Head(r, c.options(ctx)...)
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", ref, err)
	}
	payload, sig, err := SignPayload(r.Context().Name(), desc.Digest.String(), key)
	if err != nil {
		return "", err
	}
	if err := pushSignature(ctx, c, signatureTag(r.Context(), desc.Digest.String()), payload, sig); err != nil {
		return "", fmt.Errorf("sign %s: %w", ref, err)
	}
	return desc.Digest.String(), nil
}

// SignPayload makes a cosign simple-signing payload for digest with the
// identity repo and signs it.
func SignPayload(repo, digest string, key crypto.Signer) (payload, sig []byte, err error) {
	var p simpleSigning
	p.Critical.Identity.DockerReference = repo
	p.Critical.Image.DockerManifestDigest = digest
	p.Critical.Type = cosignType
	if payload, err = json.Marshal(p); err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(payload)
	switch key.Public().(type) {
	case ed25519.PublicKey:
		sig, err = key.Sign(rand.Reader, payload, crypto.Hash(0))
	case *ecdsa.PublicKey, *rsa.PublicKey:
		sig, err = key.Sign(rand.Reader, sum[:], crypto.SHA256)
	default:
		err = fmt.Errorf("key type %T is not supported", key.Public())
	}
	return payload, sig, err
}

// pushSignature appends one signature layer to the signature image at tag.
func pushSignature(ctx context.Context, c *remoteClient, tag name.Tag, payload, sig []byte) error {
	var base v1.Image = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	if old, err := remote.Image(tag, c.options(ctx)...); err == nil {
		base = old
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(payload, cosignPayloadType),
		Annotations: map[string]string{cosignSigAnnotation: base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		return err
	}
	return remote.Write(tag, img, c.options(ctx)...)
}

// ParsePrivateKey reads a signing key: PEM PKCS#8 "PRIVATE KEY", SEC 1
// "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY", or the password-encrypted key
// `cosign generate-key-pair` writes ("ENCRYPTED SIGSTORE PRIVATE KEY" /
// "ENCRYPTED COSIGN PRIVATE KEY": scrypt, then NaCl secretbox).
func ParsePrivateKey(data, password []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("private key: no PEM block")
	}
	der := b.Bytes
	switch b.Type {
	case "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY":
		var err error
		if der, err = decryptCosignKey(b.Bytes, password); err != nil {
			return nil, err
		}
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(der)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(der)
	case "PRIVATE KEY":
	default:
		return nil, fmt.Errorf("private key: PEM type %q is not supported", b.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key: type %T cannot sign", k)
	}
	return s, nil
}

// cosignKeyFile is the JSON inside cosign's encrypted key PEM.
type cosignKeyFile struct {
	KDF struct {
		Name   string `json:"name"`
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

func decryptCosignKey(data, password []byte) ([]byte, error) {
	var f cosignKeyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("encrypted private key: %v", err)
	}
	if f.KDF.Name != "scrypt" || f.Cipher.Name != "nacl/secretbox" || len(f.Cipher.Nonce) != 24 {
		return nil, fmt.Errorf("encrypted private key: kdf %q / cipher %q not supported", f.KDF.Name, f.Cipher.Name)
	}
	key, err := scrypt.Key(password, f.KDF.Salt, f.KDF.Params.N, f.KDF.Params.R, f.KDF.Params.P, 32)
	if err != nil {
		return nil, fmt.Errorf("encrypted private key: %v", err)
	}
	var k [32]byte
	var nonce [24]byte
	copy(k[:], key)
	copy(nonce[:], f.Cipher.Nonce)
	der, ok := secretbox.Open(nil, f.Ciphertext, &nonce, &k)
	if !ok {
		return nil, errors.New("encrypted private key: wrong password")
	}
	return der, nil
}
