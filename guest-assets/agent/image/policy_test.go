package image

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

func TestPolicyScopes(t *testing.T) {
	p, err := ParsePolicy([]byte(`{"default":[{"type":"reject"}],"transports":{"docker":{
		"docker.io/library/busybox:1.36":[{"type":"insecureAcceptAnything"}],
		"docker.io/library":[{"type":"reject"}],
		"quay.io/team":[{"type":"insecureAcceptAnything"}],
		"*.example.com":[{"type":"insecureAcceptAnything"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{
		"busybox:1.36":             "docker.io/library/busybox:1.36",
		"busybox:1.37":             "docker.io/library",
		"quay.io/team/app/sub:v1":  "quay.io/team",
		"quay.io/teamx/app":        "default",
		"reg.example.com:5000/a/b": "*.example.com",
		"ghcr.io/x/y":              "default",
	} {
		r, _ := name.ParseReference(ref)
		if got, _ := p.requirements(r); got != want {
			t.Errorf("%s: scope %q, want %q", ref, got, want)
		}
	}
}

func TestPolicyParseRefusals(t *testing.T) {
	for doc, want := range map[string]string{
		`{"transports":{}}`: `"default" is missing`,
		`{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k"}]}`:                             "GPG simple signing is not supported",
		`{"default":[{"type":"sigstoreSigned","keyPath":"/k","fulcio":{}}]}`:                               `unknown field "fulcio"`,
		`{"default":[{"type":"sigstoreSigned"}]}`:                                                          "exactly one of keyPath and keyData",
		`{"default":[{"type":"sigstoreSigned","keyPath":"rel/k"}]}`:                                        "neither kbs:/// nor an absolute path",
		`{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"remapIdentity"}}]}`: `"remapIdentity" is not supported`,
		`{"default":[{"type":"weird"}]}`:                                                                   `"weird" is not supported`,
		`{"default":[]}`:                                                                                   "no requirements",
	} {
		if _, err := ParsePolicy([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", doc, err, want)
		}
	}
}

func TestMatchIdentity(t *testing.T) {
	tag, _ := name.ParseReference("reg.io/a/b:v1")
	dig, _ := name.ParseReference("reg.io/a/b@sha256:" + strings.Repeat("1", 64))
	cases := []struct {
		signed string
		ref    name.Reference
		id     *Identity
		ok     bool
	}{
		{"reg.io/a/b", tag, nil, true}, // what cosign writes
		{"reg.io/a/b:v1", tag, nil, true},
		{"reg.io/a/b:v2", tag, nil, false},
		{"reg.io/a/b:v2", dig, nil, true},
		{"reg.io/a/c", tag, nil, false},
		{"reg.io/a/b:v2", tag, &Identity{Type: "matchRepository"}, true},
		{"reg.io/a/b", tag, &Identity{Type: "matchExact"}, false},
		{"other.io/x", tag, &Identity{Type: "exactRepository", DockerRepository: "other.io/x"}, true},
		{"other.io/x:v1", tag, &Identity{Type: "exactReference", DockerReference: "other.io/x:v1"}, true},
	}
	for _, c := range cases {
		if err := matchIdentity(c.signed, c.ref, c.id); (err == nil) != c.ok {
			t.Errorf("%s vs %s (%v): %v", c.signed, c.ref, c.id, err)
		}
	}
}

// A key as `cosign generate-key-pair` writes it: PKCS#8 under scrypt and
// NaCl secretbox.
func TestParseCosignEncryptedKey(t *testing.T) {
	k, _ := cosignKey(t)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	var f cosignKeyFile
	f.KDF.Name, f.Cipher.Name = "scrypt", "nacl/secretbox"
	f.KDF.Params.N, f.KDF.Params.R, f.KDF.Params.P = 1024, 8, 1
	f.KDF.Salt = make([]byte, 32)
	f.Cipher.Nonce = make([]byte, 24)
	rand.Read(f.KDF.Salt)
	rand.Read(f.Cipher.Nonce)
	sk, _ := scrypt.Key([]byte("pw"), f.KDF.Salt, 1024, 8, 1, 32)
	var key [32]byte
	var nonce [24]byte
	copy(key[:], sk)
	copy(nonce[:], f.Cipher.Nonce)
	f.Ciphertext = secretbox.Seal(nil, der, &nonce, &key)
	body, _ := json.Marshal(f)
	p := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED SIGSTORE PRIVATE KEY", Bytes: body})
	s, err := ParsePrivateKey(p, []byte("pw"))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if !k.PublicKey.Equal(s.Public()) {
		t.Fatalf("parsed another key")
	}
	if _, err := ParsePrivateKey(p, []byte("wrong")); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Errorf("wrong password: %v", err)
	}
}
