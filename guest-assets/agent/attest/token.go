package attest

import (
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// token is the KBS attestation token (an EAR JWT) and its expiry, read from
// its payload.
//
// The payload is read WITHOUT verifying the signature, on purpose: the guest
// is only the token's bearer. It received the token over its (pinned)
// connection in answer to its own attestation, it has no trust anchor for
// the attestation service's signing key (and needs none), and it only hands
// the token back to the KBS, which verifies it. A forged or altered token
// can do no more than make the KBS refuse; exp only tells the client when to
// attest again instead of waiting for that refusal. nbf is not consulted: a
// guest clock behind the attestation service's would otherwise re-attest on
// every request; the KBS judges nbf itself.
type token struct {
	raw string
	exp time.Time // zero: absent
}

// expirySkew renews a token this long before it expires, so a request does
// not carry a token that expires on the way.
const expirySkew = 10 * time.Second

func parseToken(raw string) (*token, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return nil, errors.New("not a JWT (want header.payload.signature)")
	}
	payload, err := b64url.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, errors.New("JWT payload is not base64url")
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, errors.New("JWT payload is not a JSON object")
	}
	t := &token{raw: raw}
	if t.exp, err = numericDate(claims.Exp); err != nil {
		return nil, errors.New("JWT exp is not a NumericDate")
	}
	return t, nil
}

// numericDate reads RFC 7519 NumericDate: seconds since the epoch, possibly
// fractional.
func numericDate(n *json.Number) (time.Time, error) {
	if n == nil {
		return time.Time{}, nil
	}
	f, err := n.Float64()
	if err != nil || f < 0 || f > 1<<40 {
		return time.Time{}, errors.New("bad NumericDate")
	}
	return time.Unix(0, 0).Add(time.Duration(f * float64(time.Second))), nil
}

// valid says whether to keep using the token at now. A token without exp is
// used until the KBS refuses it (as guest-components does).
func (t *token) valid(now time.Time) bool {
	return t.exp.IsZero() || now.Add(expirySkew).Before(t.exp)
}
