package kbs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// teePubKey is kbs-types' TeePubKey: tagged by kty, and only these members
// survive deserialisation. The runtime-data hash is taken over this
// re-serialised form, so extra JWK members a client sends (use, kid) are
// not part of the binding, exactly as on Trustee.
type teePubKey struct {
	Kty, Alg, Crv, X, Y, N, E string
}

func parseTeePubKey(raw json.RawMessage) (*teePubKey, error) {
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, errors.New("not a JSON object")
	}
	str := func(name string) (string, error) {
		v, ok := m[name]
		if !ok {
			return "", fmt.Errorf("missing field `%s`", name)
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("field `%s` is not a string", name)
		}
		return s, nil
	}
	kty, err := str("kty")
	if err != nil {
		return nil, err
	}
	k := &teePubKey{Kty: kty}
	var fields []*string
	var names []string
	switch kty {
	case "EC":
		fields, names = []*string{&k.Crv, &k.Alg, &k.X, &k.Y}, []string{"crv", "alg", "x", "y"}
	case "RSA":
		fields, names = []*string{&k.Alg, &k.N, &k.E}, []string{"alg", "n", "e"}
	default:
		return nil, fmt.Errorf("unknown variant `%s`, expected `RSA` or `EC`", kty)
	}
	for i, n := range names {
		if *fields[i], err = str(n); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func (k *teePubKey) jwk() map[string]any {
	if k.Kty == "RSA" {
		return map[string]any{"kty": "RSA", "alg": k.Alg, "n": k.N, "e": k.E}
	}
	return map[string]any{"kty": "EC", "crv": k.Crv, "alg": k.Alg, "x": k.X, "y": k.Y}
}

var b64url = base64.RawURLEncoding

// issueToken builds and signs an EAR-shaped JWT like Trustee's EAR broker:
// one submodule "cpu0" whose annotated evidence carries the sample claims,
// the runtime data (with the tee-pubkey the resource endpoint encrypts to)
// and, when init-data was sent, its digest and claims.
func (s *Server) issueToken(sample map[string]any, pub *teePubKey, nonce string, idata *initData) (string, error) {
	now := s.opts.Now()
	reportData := sample["report_data"]
	tee := make(map[string]any, len(sample))
	for k, v := range sample {
		if k != "report_data" {
			tee[k] = v
		}
	}
	evidence := map[string]any{
		"sample":              tee,
		"report_data":         reportData,
		"runtime_data_claims": map[string]any{"nonce": nonce, "tee-pubkey": pub.jwk()},
	}
	if idata != nil {
		evidence["init_data"] = base64.StdEncoding.EncodeToString(idata.digest)
		evidence["init_data_claims"] = idata.claims()
	}
	claims := map[string]any{
		"eat_profile":     "tag:github.com,2024:confidential-containers/Trustee",
		"iat":             now.Unix(),
		"exp":             now.Add(s.opts.TokenLifetime).Unix(),
		"iss":             "coco-test-kbs",
		"ear.verifier-id": map[string]any{"developer": "coco-runtime", "build": "test-kbs"},
		"submods": map[string]any{"cpu0": map[string]any{
			"ear.status":                      "affirming",
			"ear.appraisal-policy-id":         "default",
			"ear.veraison.annotated-evidence": evidence,
		}},
	}
	header := map[string]any{"alg": "ES256", "typ": "JWT", "jwk": ecPublicJWK(&s.signKey.PublicKey, "ES256")}
	return signES256(s.signKey, header, claims)
}

// signES256 makes a compact JWS with the raw r‖s signature (RFC 7518 §3.4).
func signES256(key *ecdsa.PrivateKey, header, payload any) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(payload)
	if err != nil {
		return "", err
	}
	input := b64url.EncodeToString(h) + "." + b64url.EncodeToString(p)
	sig, err := es256Sign(key, []byte(input))
	if err != nil {
		return "", err
	}
	return input + "." + b64url.EncodeToString(sig), nil
}

func es256Sign(key *ecdsa.PrivateKey, input []byte) ([]byte, error) {
	digest := sha256.Sum256(input)
	r, sv, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return sig, nil
}

func es256Verify(pub *ecdsa.PublicKey, input, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	digest := sha256.Sum256(input)
	r := new(big.Int).SetBytes(sig[:32])
	sv := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, digest[:], r, sv)
}

// verifyToken checks a token the way Trustee's token verifier does for one
// trusted key: ES256 signature by this KBS, and an exp in the future (no
// leeway: a test that expires a token means it).
func (s *Server) verifyToken(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	hb, err := b64url.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &header); err != nil {
		return nil, fmt.Errorf("header: %v", err)
	}
	if header.Alg != "ES256" {
		return nil, fmt.Errorf("alg %q, want ES256", header.Alg)
	}
	sig, err := b64url.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("signature: %v", err)
	}
	if !es256Verify(&s.signKey.PublicKey, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, errors.New("signature does not verify with this KBS's token key")
	}
	pb, err := b64url.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(pb, &claims); err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	exp, ok := claims["exp"].(float64)
	if !ok {
		return nil, errors.New("no exp claim")
	}
	if float64(s.opts.Now().Unix()) >= exp {
		return nil, errors.New("token expired")
	}
	return claims, nil
}

// claimTeePubKey reads the tee-pubkey at Trustee's EAR path
// /submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey.
func claimTeePubKey(claims map[string]any) (*teePubKey, error) {
	var cur any = claims
	for _, seg := range []string{"submods", "cpu0", "ear.veraison.annotated-evidence", "runtime_data_claims", "tee-pubkey"} {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, errors.New("Tee public key not found in Attestation Token")
		}
		cur = m[seg]
	}
	raw, err := json.Marshal(cur)
	if err != nil || cur == nil {
		return nil, errors.New("Tee public key not found in Attestation Token")
	}
	k, err := parseTeePubKey(raw)
	if err != nil {
		return nil, fmt.Errorf("Failed to parse Tee public key: %v", err)
	}
	return k, nil
}

// ecPublicJWK is the JWK of a P-256 public key; the uncompressed point's
// halves are already the fixed-length coordinates RFC 7518 §6.2.1.2 wants.
func ecPublicJWK(pub *ecdsa.PublicKey, alg string) map[string]any {
	pt, err := pub.Bytes()
	if err != nil || len(pt) != 65 {
		panic(fmt.Sprintf("kbs: not a P-256 public key: %v", err))
	}
	return map[string]any{"kty": "EC", "crv": "P-256", "alg": alg, "x": b64url.EncodeToString(pt[1:33]), "y": b64url.EncodeToString(pt[33:])}
}

// parseP256JWK is the inverse, for the EC members of a JWK.
func parseP256JWK(crv, x, y string) (*ecdsa.PublicKey, error) {
	if crv != "P-256" {
		return nil, fmt.Errorf("curve %q, want P-256", crv)
	}
	xb, err1 := b64url.DecodeString(x)
	yb, err2 := b64url.DecodeString(y)
	if err1 != nil || err2 != nil || len(xb) != 32 || len(yb) != 32 {
		return nil, errors.New("x and y must be 32-byte base64url (no padding)")
	}
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, xb...), yb...))
}
