package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// SealedPrefix starts a sealed secret (a Kubernetes Secret value or env var
// the workload owner sealed with guest-components' `secret seal`).
const SealedPrefix = "sealed."

// SealedVersion is the only sealed secret payload version.
const SealedVersion = "0.1.0"

// SealedError is a sealed secret that cannot be opened: malformed, badly
// signed or of a kind this guest does not unseal. It never quotes the
// secret.
type SealedError struct{ Msg string }

func (e *SealedError) Error() string { return "sealed secret: " + e.Msg }

func sealedErr(format string, a ...any) error { return &SealedError{Msg: fmt.Sprintf(format, a...)} }

// Unseal opens sealed.<b64url(header)>.<b64url(payload)>.<b64url(signature)>
// (guest-components confidential-data-hub/hub/src/secret): a JWS whose
// header is {"b64":true,"alg":"ES256","kid":"kbs:///..."}, signed with the
// EC P-256 key published as a JWK at the kid resource (raw r||s over
// "<header>.<payload>"). The payload {"version":"0.1.0","type":"vault",
// "provider":"kbs","name":"kbs:///...",...} names the KBS resource that
// holds the secret, whose bytes are returned. Envelope secrets and other
// vault providers (aliyun, aws...) are not supported here, nor is skipping
// the signature check or a kid naming a guest file.
func (c *Client) Unseal(ctx context.Context, sealed string) ([]byte, error) {
	rest, ok := strings.CutPrefix(sealed, SealedPrefix)
	if !ok {
		return nil, sealedErr("does not start with %q", SealedPrefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return nil, sealedErr("has %d dot-separated parts after %q, want 3 (header.payload.signature)", len(parts), SealedPrefix)
	}
	hdrJSON, err1 := b64url.DecodeString(parts[0])
	payload, err2 := b64url.DecodeString(parts[1])
	sig, err3 := b64url.DecodeString(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, sealedErr("a part is not base64url without padding (secrets sealed before guest-components v0.18 are not signed and not accepted)")
	}
	var hdr struct {
		B64 *bool  `json:"b64"`
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if json.Unmarshal(hdrJSON, &hdr) != nil {
		return nil, sealedErr("header is not a JSON object")
	}
	if hdr.Alg != "ES256" {
		return nil, sealedErr("header alg is %q; only ES256 is accepted", clip(hdr.Alg, 32))
	}
	if hdr.B64 != nil && !*hdr.B64 {
		return nil, sealedErr("header b64 is false; only a base64url payload is accepted")
	}
	if !strings.HasPrefix(hdr.Kid, "kbs://") {
		return nil, sealedErr("header kid %q is not a kbs:/// resource URI (verification keys from guest files are not supported)", clip(hdr.Kid, 256))
	}
	pub, err := c.signingKey(ctx, hdr.Kid)
	if err != nil {
		return nil, err
	}
	if len(sig) != 64 {
		return nil, sealedErr("signature is %d bytes, want 64 (ES256 r||s)", len(sig))
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return nil, sealedErr("signature does not verify with the key at %s", clip(hdr.Kid, 256))
	}
	return c.unsealPayload(ctx, payload)
}

func (c *Client) unsealPayload(ctx context.Context, payload []byte) ([]byte, error) {
	var p struct {
		Version          string           `json:"version"`
		Type             string           `json:"type"`
		Name             string           `json:"name"`
		Provider         string           `json:"provider"`
		ProviderSettings *json.RawMessage `json:"provider_settings"`
		Annotations      *json.RawMessage `json:"annotations"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return nil, sealedErr("payload is not a JSON object")
	}
	if p.Version != SealedVersion {
		return nil, sealedErr("payload version is %q, want %q", clip(p.Version, 32), SealedVersion)
	}
	// guest-components requires both (no serde defaults); so do we, so that
	// a secret accepted here is accepted there.
	if p.ProviderSettings == nil || p.Annotations == nil {
		return nil, sealedErr("payload lacks provider_settings or annotations (both required, {} when empty)")
	}
	switch p.Type {
	case "vault":
	case "envelope":
		return nil, sealedErr("envelope secrets (provider %q) are not supported; seal a vault secret with --provider kbs", clip(p.Provider, 32))
	default:
		return nil, sealedErr("payload type %q is not supported (want vault)", clip(p.Type, 32))
	}
	if p.Provider != "kbs" {
		return nil, sealedErr("vault provider %q is not supported; only kbs is", clip(p.Provider, 32))
	}
	data, err := c.Resource(ctx, p.Name)
	if err != nil {
		return nil, fmt.Errorf("sealed secret %s: %w", clip(p.Name, 256), err)
	}
	return data, nil
}

// signingKey fetches the ES256 verification key, a public EC P-256 JWK,
// from the KBS.
func (c *Client) signingKey(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	raw, err := c.Resource(ctx, kid)
	if err != nil {
		return nil, fmt.Errorf("sealed secret verification key %s: %w", clip(kid, 256), err)
	}
	var jwk struct {
		Kty, Crv, X, Y string
	}
	if json.Unmarshal(raw, &jwk) != nil || jwk.Kty != "EC" || jwk.Crv != "P-256" {
		return nil, sealedErr("verification key at %s is not an EC P-256 JWK", clip(kid, 256))
	}
	x, err1 := b64url.DecodeString(jwk.X)
	y, err2 := b64url.DecodeString(jwk.Y)
	if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
		return nil, sealedErr("verification key at %s has malformed x or y", clip(kid, 256))
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, sealedErr("verification key at %s is not a point on P-256", clip(kid, 256))
	}
	return pub, nil
}
