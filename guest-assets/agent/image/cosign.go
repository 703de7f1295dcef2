package image

// cosign keyed signatures, as cosign stores them: for an image whose
// manifest (or index) digest is sha256:HEX, the tag "sha256-HEX.sig" in the
// same repository holds an image whose layers are simple-signing payloads
//
//	{"critical":{"identity":{"docker-reference":"reg/repo"},
//	             "image":{"docker-manifest-digest":"sha256:HEX"},
//	             "type":"cosign container image signature"},"optional":{...}}
//
// each with its signature (base64, over the payload bytes) in the layer
// annotation dev.cosignproject.cosign/signature. Only the public key is
// checked: no Rekor bundle, Fulcio certificate or transparency log.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

const (
	cosignSigAnnotation = "dev.cosignproject.cosign/signature"
	cosignPayloadType   = "application/vnd.dev.cosign.simplesigning.v1+json"
	cosignType          = "cosign container image signature"
	maxSignatures       = 64
	maxPayload          = 64 << 10
)

type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// checkTarget is the image a policy is applied to.
type checkTarget struct {
	ref            name.Reference
	digest         string // what ref resolved to (index or manifest)
	manifestDigest string // the platform's manifest
	client         *remoteClient
	keys           KeyFetcher
}

// signatureTag is where cosign keeps the signatures of digest.
func signatureTag(repo name.Repository, digest string) name.Tag {
	return repo.Tag(strings.Replace(digest, ":", "-", 1) + ".sig")
}

// verifySigstore passes if one signature, on the index or on the platform
// manifest, verifies with the key and names this image and repository.
func (t *checkTarget) verifySigstore(ctx context.Context, r Requirement) error {
	pub, err := loadPublicKey(ctx, r, t.keys)
	if err != nil {
		return err
	}
	digests := []string{t.digest}
	if t.manifestDigest != t.digest {
		digests = append(digests, t.manifestDigest)
	}
	var reasons []string
	for _, d := range digests {
		tag := signatureTag(t.ref.Context(), d)
		sigs, err := t.signatures(ctx, tag)
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("signatures of %s (%s): %v", d, tag.TagStr(), err))
			continue
		}
		for i, s := range sigs {
			err := s.verify(pub, digests, t.ref, r.SignedIdentity)
			if err == nil {
				return nil
			}
			reasons = append(reasons, fmt.Sprintf("signature %d of %s: %v", i, d, err))
		}
	}
	return errors.New(strings.Join(reasons, "; "))
}

type cosignSignature struct {
	payload []byte
	sig     []byte
}

// signatures reads the signature image at tag; its payload blobs are
// checked against their digests by go-containerregistry as they are read
// to EOF.
func (t *checkTarget) signatures(ctx context.Context, tag name.Tag) ([]cosignSignature, error) {
	img, err := remote.Image(tag, t.client.options(ctx)...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return nil, errors.New("no cosign signature: the image is unsigned")
		}
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	if len(m.Layers) > maxSignatures {
		return nil, fmt.Errorf("%d signatures, more than %d", len(m.Layers), maxSignatures)
	}
	var out []cosignSignature
	for _, d := range m.Layers {
		b64, ok := d.Annotations[cosignSigAnnotation]
		if !ok || d.MediaType != cosignPayloadType || d.Size > maxPayload {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		payload, err := readBlob(img, d)
		if err != nil {
			return nil, fmt.Errorf("payload %s: %w", d.Digest, err)
		}
		out = append(out, cosignSignature{payload: payload, sig: sig})
	}
	if len(out) == 0 {
		return nil, errors.New("the signature image holds no cosign signature")
	}
	return out, nil
}

func readBlob(img v1.Image, d v1.Descriptor) ([]byte, error) {
	l, err := img.LayerByDigest(d.Digest)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, maxPayload+1))
}

// verify checks the signature, then what the payload says.
func (s cosignSignature) verify(pub crypto.PublicKey, digests []string, ref name.Reference, id *Identity) error {
	if err := verifySignature(pub, s.payload, s.sig); err != nil {
		return err
	}
	var p simpleSigning
	if err := json.Unmarshal(s.payload, &p); err != nil {
		return fmt.Errorf("payload: %v", err)
	}
	if p.Critical.Type != cosignType {
		return fmt.Errorf("payload type %q is not %q", p.Critical.Type, cosignType)
	}
	signed := p.Critical.Image.DockerManifestDigest
	if signed != digests[0] && (len(digests) < 2 || signed != digests[1]) {
		return fmt.Errorf("signed for manifest %s, not this image (%s)", signed, strings.Join(digests, " or "))
	}
	return matchIdentity(p.Critical.Identity.DockerReference, ref, id)
}

func verifySignature(pub crypto.PublicKey, payload, sig []byte) error {
	sum := sha256.Sum256(payload)
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, sum[:], sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, payload, sig)
	default:
		return fmt.Errorf("public key type %T is not supported", pub)
	}
	if !ok {
		return errors.New("the signature does not verify with the policy's key")
	}
	return nil
}

// matchIdentity applies signedIdentity. The default, matchRepoDigestOrExact,
// is containers-policy.json's, with one CoCo-compatible widening: a signed
// reference without tag or digest (what `cosign sign` writes) matches any
// reference of that repository, as image-rs accepts it.
func matchIdentity(signed string, ref name.Reference, id *Identity) error {
	srepo, sident, err := splitSigned(signed)
	if err != nil {
		return fmt.Errorf("payload docker-reference %q: %v", signed, err)
	}
	repo := ref.Context().Name()
	typ := "matchRepoDigestOrExact"
	if id != nil && id.Type != "" {
		typ = id.Type
	}
	fail := func() error {
		return fmt.Errorf("signed identity %q does not match the image %s under %s", signed, ref.Name(), typ)
	}
	switch typ {
	case "matchRepository":
		if srepo != repo {
			return fail()
		}
	case "matchRepoDigestOrExact":
		_, byDigest := ref.(name.Digest)
		if srepo != repo || (!byDigest && sident != "" && sident != ref.Identifier()) {
			return fail()
		}
	case "matchExact":
		if srepo != repo || sident != ref.Identifier() {
			return fail()
		}
	case "exactRepository":
		want, err := name.NewRepository(id.DockerRepository)
		if err != nil || srepo != want.Name() {
			return fail()
		}
	case "exactReference":
		want, err := name.ParseReference(id.DockerReference)
		if err != nil || srepo != want.Context().Name() || sident != want.Identifier() {
			return fail()
		}
	default:
		return fmt.Errorf("signedIdentity type %q is not supported", typ)
	}
	return nil
}

// splitSigned normalises a docker-reference into repository and tag or
// digest ("" when it has neither: go-containerregistry would invent
// "latest").
func splitSigned(s string) (repo, ident string, err error) {
	r := s
	if i := strings.Index(s, "@"); i >= 0 {
		r, ident = s[:i], s[i+1:]
	} else if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		r, ident = s[:i], s[i+1:]
	}
	rr, err := name.NewRepository(r)
	if err != nil {
		return "", "", err
	}
	return rr.Name(), ident, nil
}

// loadPublicKey reads the requirement's key: inline, from the KBS, or from
// the guest's own (measured) filesystem.
func loadPublicKey(ctx context.Context, r Requirement, keys KeyFetcher) (crypto.PublicKey, error) {
	var data []byte
	switch {
	case r.KeyData != "":
		data = []byte(r.KeyData)
		if !strings.Contains(r.KeyData, "-----BEGIN") {
			d, err := base64.StdEncoding.DecodeString(r.KeyData)
			if err != nil {
				return nil, errors.New("keyData is neither PEM nor base64")
			}
			data = d
		}
	case strings.HasPrefix(r.KeyPath, "kbs:///"):
		if keys == nil {
			return nil, fmt.Errorf("key %s: no KBS configured", r.KeyPath)
		}
		d, err := keys(ctx, r.KeyPath)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", r.KeyPath, err)
		}
		data = d
	case r.KeyPath != "":
		d, err := os.ReadFile(strings.TrimPrefix(r.KeyPath, "file://"))
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		data = d
	default:
		return nil, errors.New("no keyPath or keyData")
	}
	return ParsePublicKey(data)
}

// ParsePublicKey reads a PEM "PUBLIC KEY" (PKIX), as in cosign.pub.
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, errors.New("public key: not a PEM \"PUBLIC KEY\" block")
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return k, nil
}
