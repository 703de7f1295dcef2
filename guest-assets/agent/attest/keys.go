package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"math/big"

	jose "github.com/go-jose/go-jose/v4"
)

// PublicJWK is the tee-pubkey the guest sends in runtime-data (kbs-types
// TeePubKey): {"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x","y"} or
// {"kty":"RSA","alg":"RSA-OAEP-256","n","e"}. Members are base64url without
// padding.
type PublicJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	Alg string `json:"alg"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// teeKey is the ephemeral key pair of one attestation: the KBS wraps every
// resource to its public half, so only this guest, while it holds the key in
// memory, can read them. The private half never leaves this package (no
// accessor, never formatted into an error or log).
type teeKey struct {
	alg  KeyAlgorithm
	priv crypto.PrivateKey
	pub  PublicJWK
}

// String keeps the private key out of any accidental %v.
func (k *teeKey) String() string { return "tee key " + string(k.alg) }

var b64url = base64.RawURLEncoding

func newTEEKey(alg KeyAlgorithm) (*teeKey, error) {
	switch alg {
	case "", KeyECP256:
		return newECKey(KeyECP256, elliptic.P256(), "P-256")
	case KeyECP521:
		return newECKey(KeyECP521, elliptic.P521(), "P-521")
	case KeyRSAOAEP:
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("generate the TEE key: %w", err)
		}
		return &teeKey{alg: alg, priv: priv, pub: PublicJWK{
			Kty: "RSA", Alg: string(jose.RSA_OAEP_256),
			N: b64url.EncodeToString(priv.N.Bytes()),
			E: b64url.EncodeToString(big.NewInt(int64(priv.E)).Bytes()),
		}}, nil
	}
	return nil, fmt.Errorf("TEE key algorithm %q is not supported", alg)
}

func newECKey(alg KeyAlgorithm, curve elliptic.Curve, crv string) (*teeKey, error) {
	priv, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate the TEE key: %w", err)
	}
	return ecKey(alg, priv, crv)
}

func ecKey(alg KeyAlgorithm, priv *ecdsa.PrivateKey, crv string) (*teeKey, error) {
	// Bytes is the uncompressed point 0x04 || X || Y, each coordinate
	// left-padded to the field size, which is what a JWK's x and y hold.
	pt, err := priv.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	n := (len(pt) - 1) / 2
	return &teeKey{alg: alg, priv: priv, pub: PublicJWK{
		Kty: "EC", Crv: crv, Alg: string(jose.ECDH_ES_A256KW),
		X: b64url.EncodeToString(pt[1 : 1+n]), Y: b64url.EncodeToString(pt[1+n:]),
	}}, nil
}

// decrypt opens a KBS resource response: a flattened JWE JSON object
// (trustee kbs/src/jwe/mod.rs) whose key is wrapped to this key with
// ECDH-ES+A256KW or RSA-OAEP-256 and whose content is A256GCM. Only the
// algorithm matching the key is accepted, so a response cannot steer the
// client to a weaker one (no RSA1_5, no direct ECDH-ES).
func (k *teeKey) decrypt(body []byte) ([]byte, error) {
	keyAlg := jose.ECDH_ES_A256KW
	if k.alg == KeyRSAOAEP {
		keyAlg = jose.RSA_OAEP_256
	}
	obj, err := jose.ParseEncryptedJSON(string(body), []jose.KeyAlgorithm{keyAlg}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, err
	}
	return obj.Decrypt(k.priv)
}
