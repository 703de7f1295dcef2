package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// The sealed secret and public key of kata's SEALED_SECRET_PRECREATED_TEST
// (shared/reference/coco-secrets-images.md §2).
const (
	sealedVector = "sealed.eyJiNjQiOnRydWUsImFsZyI6IkVTMjU2Iiwia2lkIjoia2JzOi8vL2RlZmF1bHQvc2lnbmluZy1rZXkvc2VhbGVkLXNlY3JldCJ9.eyJ2ZXJzaW9uIjoiMC4xLjAiLCJ0eXBlIjoidmF1bHQiLCJuYW1lIjoia2JzOi8vL2RlZmF1bHQvc2VhbGVkLXNlY3JldC90ZXN0IiwicHJvdmlkZXIiOiJrYnMiLCJwcm92aWRlcl9zZXR0aW5ncyI6e30sImFubm90YXRpb25zIjp7fX0.ZI2fTv5ramHqHQa9DKBFD5hlJ_Mjf6cEIcpsNGshpyhEiKklML0abfH600TD7LAFHf53oDIJmEcVsDtJ20UafQ"
	sealedJWK    = `{"alg":"ES256","crv":"P-256","kid":"sealed-secret-test-key","kty":"EC","use":"sig","x":"4jH376AuwTUCIx65AJ_56D7SZzWf7sGcEA7_Csq21UM","y":"rjdceysnSa5ZfzWOPGCURMUuHndxBAGUu4ISTIVN0yA"}`
)

func TestUnsealVector(t *testing.T) {
	k := newFakeKBS(t, false)
	k.resources["default/signing-key/sealed-secret"] = []byte(sealedJWK)
	k.resources["default/sealed-secret/test"] = []byte("unsealed_secret\n")
	svc, err := NewService([]byte("[token_configs.kbs]\nurl = \""+k.srv.URL+"\"\n"), nil, Sample{}, "", fastBackoff)
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.Unseal(context.Background(), sealedVector)
	if err != nil || string(got) != "unsealed_secret\n" {
		t.Fatalf("got %q, %v", got, err)
	}

	parts := strings.Split(sealedVector, ".")
	enc := base64.RawURLEncoding.EncodeToString
	sig, _ := base64.RawURLEncoding.DecodeString(parts[3])
	sig[5] ^= 1
	payload := func(p string) string {
		return strings.Join([]string{"sealed", parts[1], enc([]byte(p)), parts[3]}, ".")
	}
	for name, tc := range map[string]struct{ in, want string }{
		"no prefix":     {strings.TrimPrefix(sealedVector, "sealed."), "does not start"},
		"fake legacy":   {"sealed.fakejwsheader.eyJ2ZXJzaW9uIjoiMC4xLjAifQ.fakesignature", "base64url"},
		"padded b64":    {sealedVector + "==", "base64url"},
		"three parts":   {"sealed.a.b", "3"},
		"bad signature": {strings.Join([]string{"sealed", parts[1], parts[2], enc(sig)}, "."), "does not verify"},
		"payload swap":  {payload(`{"version":"0.1.0","type":"vault","name":"kbs:///default/other/x","provider":"kbs","provider_settings":{},"annotations":{}}`), "does not verify"},
		"alg HS256":     {strings.Join([]string{"sealed", enc([]byte(`{"alg":"HS256","kid":"kbs:///a/b/c"}`)), parts[2], parts[3]}, "."), "only ES256"},
		"file kid":      {strings.Join([]string{"sealed", enc([]byte(`{"alg":"ES256","kid":"my-key"}`)), parts[2], parts[3]}, "."), "not a kbs:/// resource URI"},
		"b64 false":     {strings.Join([]string{"sealed", enc([]byte(`{"b64":false,"alg":"ES256","kid":"kbs:///a/b/c"}`)), parts[2], parts[3]}, "."), "b64 is false"},
	} {
		_, err := svc.Unseal(context.Background(), tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v (want %q)", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "unsealed_secret") {
			t.Errorf("%s: error quotes the secret", name)
		}
	}
}

// Payload rules, with a key of our own to sign test payloads.
func TestUnsealPayloads(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pt, _ := priv.PublicKey.Bytes()
	enc := base64.RawURLEncoding.EncodeToString
	k := newFakeKBS(t, false)
	k.resources["default/signing-key/mine"] = []byte(`{"kty":"EC","crv":"P-256","x":"` + enc(pt[1:33]) + `","y":"` + enc(pt[33:]) + `"}`)
	k.resources["default/sealed-secret/x"] = []byte("x")
	k.resources["default/signing-key/rsa"] = []byte(`{"kty":"RSA","n":"AQAB","e":"AQAB"}`)
	c := k.client(t, "")
	seal := func(kid, payload string) string {
		h := enc([]byte(`{"b64":true,"alg":"ES256","kid":"` + kid + `"}`))
		p := enc([]byte(payload))
		d := sha256Sum(h + "." + p)
		r, s, _ := ecdsa.Sign(rand.Reader, priv, d)
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return "sealed." + h + "." + p + "." + enc(sig)
	}
	const kid = "kbs:///default/signing-key/mine"
	ok := `{"version":"0.1.0","type":"vault","name":"kbs:///default/sealed-secret/x","provider":"kbs","provider_settings":{},"annotations":{}}`
	if got, err := c.Unseal(context.Background(), seal(kid, ok)); err != nil || string(got) != "x" {
		t.Fatalf("own key: %q, %v", got, err)
	}
	for name, tc := range map[string]struct{ kid, payload, want string }{
		"version":     {kid, strings.Replace(ok, "0.1.0", "0.2.0", 1), `version is "0.2.0"`},
		"envelope":    {kid, `{"version":"0.1.0","type":"envelope","provider":"aliyun","key_id":"k","provider_settings":{},"annotations":{}}`, `envelope secrets (provider "aliyun") are not supported`},
		"aws vault":   {kid, strings.Replace(ok, `"provider":"kbs"`, `"provider":"aws"`, 1), `vault provider "aws" is not supported`},
		"no settings": {kid, `{"version":"0.1.0","type":"vault","name":"kbs:///a/b/c","provider":"kbs","annotations":{}}`, "provider_settings"},
		"missing":     {kid, strings.Replace(ok, "sealed-secret/x", "sealed-secret/nope", 1), "not found"},
		"hostile":     {kid, strings.Replace(ok, "sealed-secret/x", "sealed-secret/..", 1), `".."`},
		"rsa key":     {"kbs:///default/signing-key/rsa", ok, "not an EC P-256 JWK"},
		"no key":      {"kbs:///default/signing-key/none", ok, "verification key kbs:///default/signing-key/none"},
	} {
		_, err := c.Unseal(context.Background(), seal(tc.kid, tc.payload))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v (want %q)", name, err, tc.want)
		}
	}
	var re *ResourceError
	if _, err := c.Unseal(context.Background(), seal(kid, strings.Replace(ok, "sealed-secret/x", "sealed-secret/nope", 1))); !errors.As(err, &re) {
		t.Errorf("missing resource not a *ResourceError: %v", err)
	}
}

func TestServiceWithoutKBS(t *testing.T) {
	svc, err := NewService(nil, []byte("[kbc]\nname = \"offline_fs_kbc\"\n"), Sample{}, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := svc.Resource(ctx, "a/b/c"); !errors.Is(err, ErrNoKBS) {
		t.Errorf("resource: %v", err)
	}
	if _, err := svc.Token(ctx); !errors.Is(err, ErrNoKBS) {
		t.Errorf("token: %v", err)
	}
	if _, err := svc.Unseal(ctx, sealedVector); !errors.Is(err, ErrNoKBS) {
		t.Errorf("unseal: %v", err)
	}
	ev, err := svc.Evidence(ctx, []byte("hello"))
	if err != nil || string(ev) != `{"svn":"1","report_data":"aGVsbG8="}` || svc.Tee() != "sample" {
		t.Errorf("evidence %s, %v", ev, err)
	}
	if _, err := svc.Evidence(ctx, make([]byte, 65)); err == nil {
		t.Error("65 bytes accepted")
	}
	if _, err := NewService([]byte("[token_configs.kbs\n"), nil, Sample{}, ""); err == nil || errors.Is(err, ErrNoKBS) {
		t.Errorf("malformed aa.toml: %v", err)
	}
}

func otherCertPEM(t *testing.T) string {
	t.Helper()
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "not the KBS"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"example.com"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
