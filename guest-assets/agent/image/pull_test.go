package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const marker = "COCO-SECRET-MARKER-7f3a9c"

// fixtures is the issue's five images in one registry, plus the policy
// and key fetcher a pod would have.
type fixtures struct {
	reg               *testRegistry
	plain, signed     string // references
	tampered, encOK   string
	encRefused        string
	signedDigest      string
	encLayers         []string // digests of encrypted layers
	refusedLayer      string   // the last layer of encRefused
	policy            *Policy
	keys              KeyFetcher
	fetched           []string
	kek, otherKEK     []byte
	signedImg, tamper v1.Image
}

func setup(t *testing.T) *fixtures {
	t.Helper()
	f := &fixtures{reg: newRegistry(t), kek: bytes.Repeat([]byte{7}, 32), otherKEK: bytes.Repeat([]byte{9}, 32)}
	base := layer(t, false, dir("bin"), file("bin/sh", "#!shell"), dir("etc"), file("etc/os-release", "ID=test"))
	app := layer(t, true, dir("app"), file("app/run", "app-v1")) // zstd
	f.plain = f.reg.ref("plain:v1")
	f.reg.push(t, f.plain, image(t, []string{"/app/run"}, base, app))

	key, pub := cosignKey(t)
	f.signed = f.reg.ref("signed:v1")
	f.signedImg = image(t, []string{"/app/run"}, base, app)
	f.reg.push(t, f.signed, f.signedImg)
	var err error
	if f.signedDigest, err = Sign(bg, f.signed, key, f.reg.reg()); err != nil {
		t.Fatal(err)
	}
	// tampered: signed, then the tag moved to an image whose app layer changed.
	f.tampered = f.reg.ref("tampered:v1")
	f.reg.push(t, f.tampered, f.signedImg)
	if _, err := Sign(bg, f.tampered, key, f.reg.reg()); err != nil {
		t.Fatal(err)
	}
	f.tamper = image(t, []string{"/app/run"}, base, layer(t, true, dir("app"), file("app/run", "app-EVIL")))
	f.reg.push(t, f.tampered, f.tamper)

	secret := layer(t, false, dir("secret"), file("secret/data", marker))
	plainEnc := image(t, []string{"/app/run"}, base, secret)
	encOK, err := Encrypter{Kid: "kbs:///default/key/ok", KEK: f.kek}.Image(plainEnc)
	if err != nil {
		t.Fatal(err)
	}
	f.encOK = f.reg.ref("enc:ok")
	f.reg.push(t, f.encOK, encOK)
	m, _ := encOK.Manifest()
	for _, l := range m.Layers {
		f.encLayers = append(f.encLayers, l.Digest.String())
	}
	encNo, err := Encrypter{Kid: "kbs:///default/key/refused", KEK: f.otherKEK}.Image(plainEnc)
	if err != nil {
		t.Fatal(err)
	}
	f.encRefused = f.reg.ref("enc:refused")
	f.reg.push(t, f.encRefused, encNo)
	m, _ = encNo.Manifest()
	f.refusedLayer = m.Layers[len(m.Layers)-1].Digest.String()

	f.policy, err = ParsePolicy(fmt.Appendf(nil, `{"default":[{"type":"insecureAcceptAnything"}],
		"transports":{"docker":{
		  %q:[{"type":"sigstoreSigned","keyData":%q}],
		  %q:[{"type":"sigstoreSigned","keyPath":"kbs:///default/cosign-public-key/test"}]}}}`,
		f.reg.ref("signed"), pub, f.reg.ref("tampered")))
	if err != nil {
		t.Fatal(err)
	}
	f.keys = func(ctx context.Context, uri string) ([]byte, error) {
		f.fetched = append(f.fetched, uri)
		switch uri {
		case "kbs:///default/key/ok":
			return f.kek, nil
		case "kbs:///default/cosign-public-key/test":
			return []byte(pub), nil
		}
		return nil, errors.New("KBS: PolicyDeny")
	}
	return f
}

func (f *fixtures) opts() PullOptions {
	return PullOptions{Registry: f.reg.reg(), Policy: f.policy, Keys: f.keys}
}

// TestPullIssueImages is the issue's table: plain runs, signed runs, tampered
// is refused naming the signature, encrypted runs, refused key is refused
// naming the key.
func TestPullIssueImages(t *testing.T) {
	f := setup(t)
	s := newTestStore(t, 0)

	im, err := s.Pull(bg, f.plain, f.opts())
	if err != nil {
		t.Fatalf("plain: %v", err)
	}
	if got := readLayerFile(t, im, "app/run"); got != "app-v1" {
		t.Errorf("plain: app/run = %q", got)
	}
	if !slices.Equal(im.Config.Cmd, []string{"/app/run"}) || im.Config.User != "1000:1000" || im.Config.WorkingDir != "/work" {
		t.Errorf("plain: config %+v", im.Config)
	}
	if !strings.HasPrefix(im.Digest, "sha256:") || im.Digest != im.ManifestDigest {
		t.Errorf("plain: digest %q manifest %q", im.Digest, im.ManifestDigest)
	}

	im, err = s.Pull(bg, f.signed, f.opts())
	if err != nil {
		t.Fatalf("signed: %v", err)
	}
	if im.Digest != f.signedDigest || !strings.Contains(im.Verified, "sigstoreSigned") {
		t.Errorf("signed: digest %s (signed %s), verified %q", im.Digest, f.signedDigest, im.Verified)
	}
	// Pinned by digest: the same signature applies.
	if _, err := s.Pull(bg, f.reg.ref("signed@"+f.signedDigest), f.opts()); err != nil {
		t.Errorf("signed by digest: %v", err)
	}

	_, err = s.Pull(bg, f.tampered, f.opts())
	var pe *PolicyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "unsigned") || !strings.Contains(err.Error(), f.tampered) {
		t.Errorf("tampered: want a policy refusal naming the image and the missing signature, got %v", err)
	}

	im, err = s.Pull(bg, f.encOK, f.opts())
	if err != nil {
		t.Fatalf("encrypted: %v", err)
	}
	if got := readLayerFile(t, im, "secret/data"); got != marker {
		t.Errorf("encrypted: secret/data = %q", got)
	}

	_, err = s.Pull(bg, f.encRefused, f.opts())
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Kid != "kbs:///default/key/refused" || !strings.Contains(err.Error(), "PolicyDeny") ||
		!strings.Contains(err.Error(), "layer sha256:") {
		t.Errorf("refused key: want a KeyError naming the layer and kid, got %v", err)
	}
	t.Logf("refused key error: %v", err)
	if _, err := os.Stat(filepath.Join(s.Root(), "layers", strings.TrimPrefix(f.refusedLayer, "sha256:"))); err == nil {
		t.Errorf("refused key: layer unpacked anyway")
	}
}

// A signature copied onto another image's signature tag names the wrong
// manifest digest.
func TestPullSignatureForAnotherImage(t *testing.T) {
	f := setup(t)
	s := newTestStore(t, 0)
	td, err := f.tamper.Digest()
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(f.reg.ref("tampered"), name.Insecure)
	src, _ := name.ParseReference(f.reg.ref("tampered:sha256-"+strings.TrimPrefix(f.signedDigest, "sha256:")+".sig"), name.Insecure)
	sig, err := remote.Image(src)
	if err != nil {
		t.Fatal(err)
	}
	f.reg.push(t, signatureTag(repo, td.String()).String(), sig)
	_, err = s.Pull(bg, f.tampered, f.opts())
	if err == nil || !strings.Contains(err.Error(), "signed for manifest "+f.signedDigest) {
		t.Errorf("want a refusal naming the signed digest, got %v", err)
	}
}

// A signature by another key, and a policy that rejects.
func TestPullPolicyKeyAndReject(t *testing.T) {
	f := setup(t)
	s := newTestStore(t, 0)
	_, otherPub := cosignKey(t)
	p, err := ParsePolicy(fmt.Appendf(nil, `{"default":[{"type":"reject"}],"transports":{"docker":{%q:[{"type":"sigstoreSigned","keyData":%q,"signedIdentity":{"type":"matchRepository"}}]}}}`,
		f.reg.ref("signed"), otherPub))
	if err != nil {
		t.Fatal(err)
	}
	o := f.opts()
	o.Policy = p
	if _, err := s.Pull(bg, f.signed, o); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("other key: %v", err)
	}
	if _, err := s.Pull(bg, f.plain, o); err == nil || !strings.Contains(err.Error(), `scope "default", reject`) {
		t.Errorf("reject: %v", err)
	}
}

// The registry serves a changed layer blob: the pull fails naming the layer
// and the registry, and nothing of it stays in the store.
func TestPullTamperedBlob(t *testing.T) {
	f := setup(t)
	s := newTestStore(t, 0)
	m, err := f.signedImg.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	bad := m.Layers[1].Digest.String()
	f.reg.tampered[bad] = true
	_, err = s.Pull(bg, f.signed, f.opts())
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), f.reg.host) {
		t.Fatalf("want an error naming layer %s and the registry, got %v", bad, err)
	}
	t.Logf("tampered blob: %v", err)
	for _, d := range []string{"layers/" + strings.TrimPrefix(bad, "sha256:"), "staging"} {
		ents, _ := os.ReadDir(filepath.Join(s.Root(), d))
		if _, statErr := os.Stat(filepath.Join(s.Root(), d)); (d == "staging" && len(ents) > 0) || (d != "staging" && statErr == nil) {
			t.Errorf("%s left behind", d)
		}
	}
}

// The decrypted marker is only ever written under the store's layers: not
// in the registry (ciphertext), not in a temp file, not in staging.
func TestDecryptedContentOnlyInStore(t *testing.T) {
	f := setup(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	s, err := NewStore(filepath.Join(tmp, "store"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(bg, f.encOK, f.opts()); err != nil {
		t.Fatal(err)
	}
	var found []string
	filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(marker)) {
				found = append(found, p)
			}
		}
		return nil
	})
	want := filepath.Join(s.Root(), "layers") + "/"
	if len(found) != 1 || !strings.HasPrefix(found[0], want) {
		t.Errorf("marker found in %v, want exactly one file under %s", found, want)
	}
	for _, d := range f.encLayers {
		src, _ := name.ParseReference(f.reg.ref("enc@"+d), name.Insecure)
		l, err := remote.Layer(src.Context().Digest(d))
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := l.Compressed()
		var b bytes.Buffer
		b.ReadFrom(rc)
		rc.Close()
		if bytes.Contains(b.Bytes(), []byte(marker)) {
			t.Errorf("registry blob %s holds the marker in clear", d)
		}
	}
}

// An index with several platforms: linux/amd64 is picked; a platform the
// index lacks is an error listing what it has.
func TestPullIndex(t *testing.T) {
	reg := newRegistry(t)
	s := newTestStore(t, 0)
	arm := image(t, nil, layer(t, false, file("arch", "arm64")))
	amd := image(t, nil, layer(t, false, file("arch", "amd64")))
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	top := reg.push(t, reg.ref("multi:v1"), idx)
	amdDigest, _ := amd.Digest()
	o := PullOptions{Registry: reg.reg(), Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}
	im, err := s.Pull(bg, reg.ref("multi:v1"), o)
	if err != nil {
		t.Fatal(err)
	}
	if im.Digest != top || im.ManifestDigest != amdDigest.String() || readLayerFile(t, im, "arch") != "amd64" {
		t.Errorf("got %s/%s arch %q", im.Digest, im.ManifestDigest, readLayerFile(t, im, "arch"))
	}
	o.Platform = &v1.Platform{OS: "linux", Architecture: "s390x"}
	if _, err := s.Pull(bg, reg.ref("multi:v1"), o); err == nil || !strings.Contains(err.Error(), "linux/arm64, linux/amd64") {
		t.Errorf("missing platform: %v", err)
	}
}

// Plain HTTP only when allowed; credentials only from the config.json given.
func TestPullTransportAndCredentials(t *testing.T) {
	f := setup(t)
	s := newTestStore(t, 0)
	if _, err := s.Pull(bg, f.plain, PullOptions{}); err == nil || !strings.Contains(err.Error(), "plain HTTP to "+f.reg.host+" refused") {
		t.Errorf("plain HTTP not allowed: %v", err)
	}
	f.reg.user, f.reg.pass = "alice", "s3cret"
	o := PullOptions{Registry: f.reg.reg()}
	if _, err := s.Pull(bg, f.plain, o); err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("no credentials: %v", err)
	}
	o.Credentials = fmt.Appendf(nil, `{"auths":{"http://%s":{"username":"alice","password":"s3cret"}}}`, f.reg.host)
	if _, err := s.Pull(bg, f.plain, o); err != nil {
		t.Errorf("with credentials: %v", err)
	}
	o.Credentials = []byte(`{"auths":{"x":{"auth":"s3cret-not-base64!"}}}`)
	if _, err := s.Pull(bg, f.plain, o); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad credentials must fail without quoting them: %v", err)
	}
}

// The size limit stops an unpack with a clear error and gives back what it
// had counted.
func TestPullSizeLimit(t *testing.T) {
	reg := newRegistry(t)
	s := newTestStore(t, 256<<10)
	big := layer(t, false, file("big", strings.Repeat("x", 1<<20)))
	reg.push(t, reg.ref("big:v1"), image(t, nil, big))
	_, err := s.Pull(bg, reg.ref("big:v1"), PullOptions{Registry: reg.reg()})
	var le *LimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "262144-byte limit") {
		t.Fatalf("want a LimitError, got %v", err)
	}
	t.Logf("limit: %v", err)
	if s.Used() != 0 {
		t.Errorf("used %d after a failed pull", s.Used())
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Root(), "staging")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}
}

// Two pulls of images sharing a base layer unpack it once.
func TestPullSharesLayers(t *testing.T) {
	f := setup(t)
	s := newTestStore(t, 0)
	a, err := s.Pull(bg, f.plain, f.opts())
	if err != nil {
		t.Fatal(err)
	}
	used := s.Used()
	b, err := s.Pull(bg, f.signed, f.opts())
	if err != nil {
		t.Fatal(err)
	}
	if a.Layers[0] != b.Layers[0] || s.Used() != used {
		t.Errorf("base layer not shared: %v vs %v, used %d -> %d", a.Layers, b.Layers, used, s.Used())
	}
}
