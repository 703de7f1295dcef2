package kbs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"regexp"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// Trustee's ResourceDesc grammar: exactly three segments of these characters.
var resourcePathRE = regexp.MustCompile(`^[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-.]*/[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-.]*/[a-zA-Z0-9_\-]+[a-zA-Z0-9_\-.]*$`)

func checkResourcePath(p string) error {
	if !resourcePathRE.MatchString(p) {
		return fmt.Errorf("illegal ResourceDesc format: %q (want <repo>/<type>/<tag>)", p)
	}
	return nil
}

func (s *Server) resourceFail(w http.ResponseWriter, errType, detail string) {
	s.fail(w, "resource", http.StatusUnauthorized, errType, detail)
}

// handleResource follows Trustee's api_server order: find the token
// (attested session cookie, else bearer), verify it, ask the policy, read
// the resource, then encrypt it to the token's tee-pubkey. Every failure is
// a 401 with Trustee's error type, a missing resource included
// (PluginInternalError, not 404).
func (s *Server) handleResource(w http.ResponseWriter, r *http.Request, path string) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost, http.MethodDelete:
		// Trustee routes these to its admin API; resources here are set
		// in-process with SetResource.
		s.resourceFail(w, ErrAdminAuthAccess, "admin access denied for endpoint resource: this test KBS has no admin API")
		return
	default:
		s.resourceFail(w, ErrPluginInternal, "Plugin internal error: Illegal HTTP method. Only supports `GET`, `POST` and `DELETE`")
		return
	}
	token, why := s.requestToken(r)
	if token == "" {
		s.resourceFail(w, ErrTokenNotFound, "Attestation Token not found: "+why)
		return
	}
	claims, err := s.verifyToken(token)
	if err != nil {
		s.resourceFail(w, ErrTokenVerifier, "Token Verifier error: Failed to verify Attestation Token: "+err.Error())
		return
	}
	s.mu.Lock()
	policy := s.policy
	s.mu.Unlock()
	if policy != nil {
		if err := policy(path, claims); err != nil {
			s.resourceFail(w, ErrPolicyDeny, "Access denied by policy: "+err.Error())
			return
		}
	}
	if err := checkResourcePath(path); err != nil {
		s.resourceFail(w, ErrPluginInternal, "Plugin internal error: "+err.Error())
		return
	}
	s.mu.Lock()
	data, ok := s.resources[path]
	s.mu.Unlock()
	if !ok {
		s.resourceFail(w, ErrPluginInternal, "Plugin internal error: resource not found: "+path)
		return
	}
	pub, err := claimTeePubKey(claims)
	if err != nil {
		s.resourceFail(w, ErrTokenVerifier, "Token Verifier error: "+err.Error())
		return
	}
	jwe, err := encryptTo(pub, data)
	if err != nil {
		s.resourceFail(w, ErrJwe, "JWE failed: "+err.Error())
		return
	}
	s.mu.Lock()
	s.served = append(s.served, path)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(jwe))
}

// requestToken returns the attested session's token if the cookie names
// one, else the bearer token, else "" and why neither counted.
func (s *Server) requestToken(r *http.Request) (string, string) {
	why := "no kbs-session-id cookie"
	if c, err := r.Cookie(SessionCookie); err == nil {
		ss, reason := s.lookupSession(c.Value)
		if ss != nil {
			s.mu.Lock()
			token := ss.token
			s.mu.Unlock()
			if token != "" {
				return token, ""
			}
			reason = "session not attested"
		}
		why = reason
	}
	auth := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		if auth != "" {
			return "", why + "; Authorization is not `Bearer <token>`"
		}
		return "", why + "; no Authorization header"
	}
	return strings.TrimSpace(tok), ""
}

// encryptTo makes the flattened JWE JSON Trustee's kbs/src/jwe answers with:
// ECDH-ES+A256KW (P-256, P-521) or RSA-OAEP-256, content A256GCM, no aad.
// RSA1_5, which Trustee still serves with a warning, is refused here so a
// client relying on it is noticed.
func encryptTo(k *teePubKey, data []byte) (string, error) {
	var rcpt jose.Recipient
	switch {
	case k.Kty == "EC" && k.Alg == "ECDH-ES+A256KW":
		var curve elliptic.Curve
		size := 0
		switch k.Crv {
		case "P-256":
			curve, size = elliptic.P256(), 32
		case "P-521":
			curve, size = elliptic.P521(), 66
		default:
			return "", fmt.Errorf("curve %s and algorithm %s is not supported", k.Crv, k.Alg)
		}
		x, err1 := b64url.DecodeString(k.X)
		y, err2 := b64url.DecodeString(k.Y)
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return "", fmt.Errorf("tee-pubkey x/y must be %d-byte base64url without padding", size)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return "", fmt.Errorf("tee-pubkey: %v", err)
		}
		rcpt = jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: pub}
	case k.Kty == "RSA" && k.Alg == "RSA-OAEP-256":
		n, err1 := b64url.DecodeString(k.N)
		e, err2 := b64url.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			return "", errors.New("tee-pubkey n/e must be base64url without padding")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key of %d bits; want at least 2048", pub.N.BitLen())
		}
		rcpt = jose.Recipient{Algorithm: jose.RSA_OAEP_256, Key: pub}
	case k.Kty == "RSA":
		return "", fmt.Errorf("algorithm %s is not supported", k.Alg)
	default:
		return "", fmt.Errorf("curve %s and algorithm %s is not supported", k.Crv, k.Alg)
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, rcpt, nil)
	if err != nil {
		return "", err
	}
	obj, err := enc.Encrypt(data)
	if err != nil {
		return "", err
	}
	return obj.FullSerialize(), nil
}
