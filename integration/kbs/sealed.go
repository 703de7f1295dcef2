package kbs

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// SealedSecretPrefix starts every sealed secret (CDH secret/mod.rs).
const SealedSecretPrefix = "sealed."

// SealSecret makes a CDH "vault" sealed secret pointing at resourceURI
// (e.g. "kbs:///default/sealed-secret/test"), signed ES256 by signingKey:
// sealed.<b64url header>.<b64url payload>.<b64url r‖s>, the signature over
// "<header>.<payload>" without the prefix. kid names where the guest finds
// the verification key, normally a KBS resource URI such as
// "kbs:///default/signing-key/sealed-secret" holding SealingPublicJWK.
func SealSecret(signingKey *ecdsa.PrivateKey, kid, resourceURI string) (string, error) {
	if signingKey == nil {
		return "", errors.New("kbs: SealSecret: no signing key")
	}
	if _, err := signingKey.PublicKey.Bytes(); err != nil || signingKey.Curve.Params().Name != "P-256" {
		return "", errors.New("kbs: SealSecret: ES256 needs a P-256 key")
	}
	// Structs, not maps: the member order is the one CDH's secret CLI
	// writes, so a secret made here reads like one made there.
	header, err := json.Marshal(struct {
		B64 bool   `json:"b64"`
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}{true, "ES256", kid})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(struct {
		Version          string            `json:"version"`
		Type             string            `json:"type"`
		Name             string            `json:"name"`
		Provider         string            `json:"provider"`
		ProviderSettings map[string]string `json:"provider_settings"`
		Annotations      map[string]string `json:"annotations"`
	}{"0.1.0", "vault", resourceURI, "kbs", map[string]string{}, map[string]string{}})
	if err != nil {
		return "", err
	}
	input := b64url.EncodeToString(header) + "." + b64url.EncodeToString(payload)
	sig, err := es256Sign(signingKey, []byte(input))
	if err != nil {
		return "", err
	}
	return SealedSecretPrefix + input + "." + b64url.EncodeToString(sig), nil
}

// SealingPublicJWK is the public half of a sealing key as the JWK CDH
// fetches from the KBS to verify sealed secrets (EC P-256, alg ES256,
// use sig) — store it with SetResource at the kid's path.
func SealingPublicJWK(pub *ecdsa.PublicKey, kid string) ([]byte, error) {
	if pub == nil || pub.Curve == nil || pub.Curve.Params().Name != "P-256" {
		return nil, errors.New("kbs: SealingPublicJWK: want a P-256 key")
	}
	jwk := ecPublicJWK(pub, "ES256")
	jwk["use"] = "sig"
	if kid != "" {
		jwk["kid"] = kid
	}
	return json.Marshal(jwk)
}

// VerifySealedSecret checks a sealed secret's ES256 signature against a
// public JWK and returns its decoded payload JSON. It is the test-side
// counterpart of CDH's check, written independently of the guest code.
func VerifySealedSecret(sealed string, jwk []byte) ([]byte, error) {
	rest, ok := strings.CutPrefix(sealed, SealedSecretPrefix)
	if !ok {
		return nil, errors.New("not a sealed secret (no \"sealed.\" prefix)")
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("sealed secret has %d dot-separated parts after the prefix, want 3", len(parts))
	}
	hb, err := b64url.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &header); err != nil || header.Alg != "ES256" {
		return nil, fmt.Errorf("header alg %q, want ES256", header.Alg)
	}
	var key struct {
		Kty, Crv, X, Y string
	}
	if err := json.Unmarshal(jwk, &key); err != nil || key.Kty != "EC" {
		return nil, errors.New("verification key is not an EC JWK")
	}
	pub, err := parseP256JWK(key.Crv, key.X, key.Y)
	if err != nil {
		return nil, fmt.Errorf("verification key: %v", err)
	}
	sig, err := b64url.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature: %v", err)
	}
	if !es256Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, errors.New("signature does not verify")
	}
	return b64url.DecodeString(parts[1])
}
