package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// A fixed nonce and JWK give byte-exact canonical runtime data and digest
// (computed independently with Python's json.dumps(sort_keys=True,
// separators=(",",":")) and hashlib.sha384).
func TestRuntimeDataVector(t *testing.T) {
	jwk := PublicJWK{Kty: "EC", Crv: "P-256", Alg: "ECDH-ES+A256KW",
		X: "4jH376AuwTUCIx65AJ_56D7SZzWf7sGcEA7_Csq21UM", Y: "rjdceysnSa5ZfzWOPGCURMUuHndxBAGUu4ISTIVN0yA"}
	canon, digest, err := RuntimeData(SHA384, "9JXZ8tc+e/0c9WZ0QVzs6jHfc0o+wq+bgpr58m+4Ou8=", jwk, "")
	if err != nil {
		t.Fatal(err)
	}
	wantCanon := `{"additional-evidence":"","nonce":"9JXZ8tc+e/0c9WZ0QVzs6jHfc0o+wq+bgpr58m+4Ou8=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"4jH376AuwTUCIx65AJ_56D7SZzWf7sGcEA7_Csq21UM","y":"rjdceysnSa5ZfzWOPGCURMUuHndxBAGUu4ISTIVN0yA"}}`
	if string(canon) != wantCanon {
		t.Fatalf("canonical runtime data:\n got %s\nwant %s", canon, wantCanon)
	}
	if got := hex.EncodeToString(digest); got != "35a64e47f837cb8bafdc3c22cc0d13935a2812ec2e5f620876c3cd504206671af9e516fda21bf221d7d04fa0c1d78b95" {
		t.Fatalf("digest %s", got)
	}
	ev, err := Sample{}.Evidence(digest)
	if err != nil || string(ev) != `{"svn":"1","report_data":"NaZOR/g3y4uv3DwizA0Tk1ooEuwuX2IIdsPNUEIGZxr55Rb9ohvyIdfQT6DB14uV"}` {
		t.Fatalf("sample evidence %s, %v", ev, err)
	}
	if _, _, err := RuntimeData("sm3", "n", jwk, ""); err == nil {
		t.Fatal("sm3 accepted")
	}
}

func TestSelectedHash(t *testing.T) {
	for in, want := range map[string]HashAlgorithm{`""`: SHA384, `null`: SHA384, `{}`: SHA384,
		`{"selected-hash-algorithm":"sha512"}`: SHA512, `{"selected-hash-algorithm":"SHA256"}`: SHA256} {
		if got, err := selectedHash(json.RawMessage(in)); err != nil || got != want {
			t.Errorf("%s: %s, %v", in, got, err)
		}
	}
	if _, err := selectedHash(json.RawMessage(`{"selected-hash-algorithm":"md5"}`)); err == nil {
		t.Error("md5 accepted")
	}
}

func jwt(t *testing.T, payload string) string {
	t.Helper()
	e := base64.RawURLEncoding.EncodeToString
	return e([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + e([]byte(payload)) + "." + e([]byte("sig"))
}

func TestToken(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tok, err := parseToken(jwt(t, `{"exp":1700000100,"nbf":1800000000,"submods":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !tok.valid(now) || !tok.valid(now.Add(89*time.Second)) {
		t.Error("valid token judged expired (nbf must not matter)")
	}
	if tok.valid(now.Add(91*time.Second)) || tok.valid(now.Add(time.Hour)) {
		t.Error("token used within expirySkew of exp or after it")
	}
	tok, err = parseToken(jwt(t, `{"iss":"x"}`))
	if err != nil || !tok.valid(now.Add(24*365*time.Hour)) {
		t.Errorf("no exp: %v", err)
	}
	for _, bad := range []string{"", "a.b", "a.b.c.d", "e30.!!!.c", jwt(t, `[1]`), jwt(t, `{"exp":"soon"}`), jwt(t, `{"exp":-1}`)} {
		if _, err := parseToken(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A synthetic SNP report (version 3, Genoa) with a distinct value in every
// field; the JSON must carry each one where sev's AttestationReport does.
func TestSNPEvidence(t *testing.T) {
	raw := make([]byte, snpReportSize)
	for i := range raw {
		raw[i] = byte(i*7 + 3)
	}
	binary.LittleEndian.PutUint32(raw[0:], 3)
	raw[snpCPUIDFam], raw[snpCPUIDFam+1], raw[snpCPUIDFam+2] = 0x19, 0x11, 0x01
	ev, err := SNPEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]any
	dec := json.NewDecoder(bytes.NewReader(ev))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["cert_chain"]; !ok {
		t.Error("no cert_chain member")
	}
	r := got["attestation_report"]
	// Key order as serde writes it (sev 7.1.0 field order).
	order := []string{"version", "guest_svn", "policy", "family_id", "image_id", "vmpl", "sig_algo", "current_tcb",
		"plat_info", "key_info", "report_data", "measurement", "host_data", "id_key_digest", "author_key_digest",
		"report_id", "report_id_ma", "reported_tcb", "cpuid_fam_id", "cpuid_mod_id", "cpuid_step", "chip_id",
		"committed_tcb", "current", "committed", "launch_tcb", "launch_mit_vector", "current_mit_vector", "signature"}
	last := -1
	for _, k := range order {
		i := strings.Index(string(ev), `"`+k+`":`)
		if i < 0 || i < last {
			t.Errorf("member %s missing or out of order", k)
		}
		last = i
	}
	if len(r) != len(order) {
		t.Errorf("%d members, want %d", len(r), len(order))
	}
	arr := func(k string, off, n int) {
		t.Helper()
		a, _ := r[k].([]any)
		if len(a) != n {
			t.Fatalf("%s: %d elements, want %d", k, len(a), n)
		}
		for i, v := range a {
			if v.(json.Number).String() != big.NewInt(int64(raw[off+i])).String() {
				t.Fatalf("%s[%d] = %v, want %d", k, i, v, raw[off+i])
			}
		}
	}
	arr("report_data", 0x50, 64)
	arr("measurement", 0x90, 48)
	arr("host_data", 0xC0, 32)
	arr("chip_id", 0x1A0, 64)
	num := func(k string, want uint64) {
		t.Helper()
		if s := r[k].(json.Number).String(); s != big.NewInt(0).SetUint64(want).String() {
			t.Errorf("%s = %s, want %d", k, s, want)
		}
	}
	num("version", 3)
	num("guest_svn", uint64(binary.LittleEndian.Uint32(raw[4:])))
	num("policy", binary.LittleEndian.Uint64(raw[8:]))
	num("vmpl", uint64(binary.LittleEndian.Uint32(raw[0x30:])))
	num("plat_info", binary.LittleEndian.Uint64(raw[0x40:]))
	num("cpuid_fam_id", 0x19)
	num("cpuid_mod_id", 0x11)
	if r["launch_mit_vector"] != nil || r["current_mit_vector"] != nil {
		t.Error("version 3 report has mitigation vectors")
	}
	tcb := r["reported_tcb"].(map[string]any)
	if tcb["fmc"] != nil || tcb["bootloader"].(json.Number).String() != big.NewInt(int64(raw[0x180])).String() ||
		tcb["snp"].(json.Number).String() != big.NewInt(int64(raw[0x186])).String() {
		t.Errorf("reported_tcb %v (legacy layout: bootloader byte 0, snp byte 6)", tcb)
	}
	cur := r["current"].(map[string]any)
	if cur["build"].(json.Number).String() != big.NewInt(int64(raw[0x1E8])).String() || cur["major"].(json.Number).String() != big.NewInt(int64(raw[0x1EA])).String() {
		t.Errorf("current %v (build, minor, major order)", cur)
	}
	sig := r["signature"].(map[string]any)
	if len(sig["r"].([]any)) != 72 || len(sig["s"].([]any)) != 72 {
		t.Error("signature r/s not 72 bytes")
	}

	// Turin (family 0x1A) and version 5: FMC first, mitigation vectors.
	binary.LittleEndian.PutUint32(raw[0:], 5)
	raw[snpCPUIDFam], raw[snpCPUIDFam+1] = 0x1A, 0x02
	rep, err := parseSNPReport(raw)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ReportedTCB.FMC == nil || *rep.ReportedTCB.FMC != raw[0x180] || rep.ReportedTCB.SNP != raw[0x183] ||
		rep.LaunchMitVector == nil || *rep.LaunchMitVector != binary.LittleEndian.Uint64(raw[0x1F8:]) {
		t.Errorf("Turin v5 layout wrong: %+v", rep.ReportedTCB)
	}
	// Version 2: no CPUID, generation from the chip id.
	binary.LittleEndian.PutUint32(raw[0:], 2)
	if rep, err = parseSNPReport(raw); err != nil || rep.CPUIDFamID != nil || rep.ReportedTCB.FMC != nil {
		t.Errorf("v2: %+v, %v", rep, err)
	}
	for name, mut := range map[string]func([]byte) []byte{
		"short":       func(b []byte) []byte { return b[:1000] },
		"version 1":   func(b []byte) []byte { binary.LittleEndian.PutUint32(b, 1); return b },
		"unknown cpu": func(b []byte) []byte { binary.LittleEndian.PutUint32(b, 3); b[snpCPUIDFam] = 0x17; return b },
		"v2 masked id": func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b, 2)
			copy(b[snpChipID:snpChipID+64], make([]byte, 64))
			return b
		},
	} {
		if _, err := SNPEvidence(mut(bytes.Clone(raw))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSNPAndTDXAttesters(t *testing.T) {
	digest := bytes.Repeat([]byte{0xab}, 48)
	var asked []byte
	snp := &SNP{Report: func(d []byte) ([]byte, string, error) {
		asked = d
		raw := make([]byte, snpReportSize)
		binary.LittleEndian.PutUint32(raw, 3)
		raw[snpCPUIDFam] = 0x19
		copy(raw[snpReportData:], d)
		return raw, "sev_guest", nil
	}}
	if _, err := snp.Evidence(digest); err != nil {
		t.Fatal(err)
	}
	// 48-byte sha384 digest, zero-padded at the end to 64 (regularize_data).
	if len(asked) != 64 || !bytes.Equal(asked[:48], digest) || !bytes.Equal(asked[48:], make([]byte, 16)) {
		t.Fatalf("report data asked %x", asked)
	}
	lying := &SNP{Report: func(d []byte) ([]byte, string, error) { return make([]byte, snpReportSize), "sev_guest", nil }}
	if _, err := lying.Evidence(digest); err == nil || !strings.Contains(err.Error(), "does not carry") {
		t.Errorf("report without our data: %v", err)
	}
	wrong := &SNP{Report: func(d []byte) ([]byte, string, error) { return nil, "tdx_guest", nil }}
	if _, err := wrong.Evidence(digest); err == nil {
		t.Error("tdx provider accepted for snp")
	}
	tdx := &TDX{Report: func(d []byte) ([]byte, string, error) { asked = d; return []byte("QUOTE"), "tdx_guest", nil }}
	ev, err := tdx.Evidence(digest)
	if err != nil || string(ev) != `{"cc_eventlog":null,"quote":"UVVPVEU="}` || len(asked) != 64 {
		t.Fatalf("tdx evidence %s, %v", ev, err)
	}
	if _, err := tdx.Evidence(make([]byte, 65)); err == nil {
		t.Error("65 bytes of report data accepted")
	}
}

// JWE decryption with a known key: a fixed P-256 private key, a JWE built
// by go-jose the way the KBS builds it.
func TestDecryptKnownKey(t *testing.T) {
	d, _ := new(big.Int).SetString("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721", 16)
	priv := &ecdsa.PrivateKey{D: d, PublicKey: ecdsa.PublicKey{Curve: elliptic.P256()}}
	priv.PublicKey.X, priv.PublicKey.Y = elliptic.P256().ScalarBaseMult(d.Bytes())
	key, err := ecKey(KeyECP256, priv, "P-256")
	if err != nil {
		t.Fatal(err)
	}
	// RFC 6979 A.2.5's key; its public point is known.
	if key.pub.X != base64.RawURLEncoding.EncodeToString(mustHex("60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6")) {
		t.Fatalf("x = %s", key.pub.X)
	}
	jwe := encryptTo(t, &priv.PublicKey, jose.ECDH_ES_A256KW, []byte("secret bytes"))
	if got, err := key.decrypt(jwe); err != nil || string(got) != "secret bytes" {
		t.Fatalf("decrypt: %q, %v", got, err)
	}
	// Tampered ciphertext, wrong key, RSA-wrapped to an EC key, junk.
	var m map[string]string
	json.Unmarshal(jwe, &m)
	m["tag"] = base64.RawURLEncoding.EncodeToString(make([]byte, 16))
	tampered, _ := json.Marshal(m)
	other, _ := newTEEKey(KeyECP256)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, c := range map[string]struct {
		k *teeKey
		b []byte
	}{
		"tampered":  {key, tampered},
		"wrong key": {other, jwe},
		"rsa alg":   {key, encryptTo(t, &rsaKey.PublicKey, jose.RSA_OAEP_256, []byte("x"))},
		"junk":      {key, []byte(`{"protected":"e30"}`)},
	} {
		if _, err := c.k.decrypt(c.b); err == nil {
			t.Errorf("%s: decrypted", name)
		}
	}
	// The RSA option.
	rk, err := newTEEKey(KeyRSAOAEP)
	if err != nil {
		t.Fatal(err)
	}
	if rk.pub.Kty != "RSA" || rk.pub.Alg != "RSA-OAEP-256" || rk.pub.E != "AQAB" {
		t.Fatalf("rsa jwk %+v", rk.pub)
	}
	jwe = encryptTo(t, &rk.priv.(*rsa.PrivateKey).PublicKey, jose.RSA_OAEP_256, []byte("rsa"))
	if got, err := rk.decrypt(jwe); err != nil || string(got) != "rsa" {
		t.Fatalf("rsa decrypt %q, %v", got, err)
	}
	if s := rk.String(); strings.Contains(s, "PRIVATE") || strings.Contains(s, "{") {
		t.Errorf("key formats as %q", s)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// encryptTo builds a flattened JWE JSON as Trustee's KBS does (A256GCM
// content, the key wrapped with alg).
func encryptTo(t *testing.T, pub any, alg jose.KeyAlgorithm, plain []byte) []byte {
	t.Helper()
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: alg, Key: pub}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(obj.FullSerialize())
}

func sha256Sum(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}
