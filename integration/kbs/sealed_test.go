package kbs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
)

// The precreated sealed secret of kata's confidential_common.sh and its key
// (coco-secrets-images.md §2).
const (
	vectorSealed = "sealed.eyJiNjQiOnRydWUsImFsZyI6IkVTMjU2Iiwia2lkIjoia2JzOi8vL2RlZmF1bHQvc2lnbmluZy1rZXkvc2VhbGVkLXNlY3JldCJ9.eyJ2ZXJzaW9uIjoiMC4xLjAiLCJ0eXBlIjoidmF1bHQiLCJuYW1lIjoia2JzOi8vL2RlZmF1bHQvc2VhbGVkLXNlY3JldC90ZXN0IiwicHJvdmlkZXIiOiJrYnMiLCJwcm92aWRlcl9zZXR0aW5ncyI6e30sImFubm90YXRpb25zIjp7fX0.ZI2fTv5ramHqHQa9DKBFD5hlJ_Mjf6cEIcpsNGshpyhEiKklML0abfH600TD7LAFHf53oDIJmEcVsDtJ20UafQ"
	vectorJWK    = `{"alg":"ES256","crv":"P-256","kid":"sealed-secret-test-key","kty":"EC","use":"sig","x":"4jH376AuwTUCIx65AJ_56D7SZzWf7sGcEA7_Csq21UM","y":"rjdceysnSa5ZfzWOPGCURMUuHndxBAGUu4ISTIVN0yA"}`
	vectorKid    = "kbs:///default/signing-key/sealed-secret"
	vectorURI    = "kbs:///default/sealed-secret/test"
)

func TestSealedSecretVector(t *testing.T) {
	payload, err := VerifySealedSecret(vectorSealed, []byte(vectorJWK))
	if err != nil {
		t.Fatalf("the published vector does not verify: %v", err)
	}
	if !strings.Contains(string(payload), `"name":"kbs:///default/sealed-secret/test"`) {
		t.Errorf("payload %s", payload)
	}
	// A flipped signature byte must fail.
	bad := []byte(vectorSealed)
	bad[len(bad)-3] ^= 'A' ^ 'B'
	if _, err := VerifySealedSecret(string(bad), []byte(vectorJWK)); err == nil {
		t.Error("tampered signature verified")
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := SealSecret(key, vectorKid, vectorURI)
	if err != nil {
		t.Fatal(err)
	}
	// ECDSA is randomised, so only header and payload can match the vector
	// byte for byte; they must, or CDH would read ours differently.
	vp := strings.Split(vectorSealed, ".")
	op := strings.Split(ours, ".")
	if len(op) != 4 || op[0] != "sealed" || op[1] != vp[1] || op[2] != vp[2] {
		t.Fatalf("header/payload differ from the vector:\n ours %s\n want %s", ours, vectorSealed)
	}
	jwk, err := SealingPublicJWK(&key.PublicKey, "test-key")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(jwk, &m); err != nil || m["kty"] != "EC" || m["crv"] != "P-256" || m["alg"] != "ES256" || m["use"] != "sig" || len(m["x"]) != 43 || len(m["y"]) != 43 {
		t.Fatalf("JWK %s", jwk)
	}
	if _, err := VerifySealedSecret(ours, jwk); err != nil {
		t.Fatalf("our own sealed secret: %v", err)
	}
	if _, err := VerifySealedSecret(ours, []byte(vectorJWK)); err == nil {
		t.Error("our secret verified with another key")
	}
}
