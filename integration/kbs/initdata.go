package kbs

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/BurntSushi/toml"
)

// initData is a parsed init-data document (Trustee kbs/docs/initdata.md).
type initData struct {
	algorithm string
	digest    []byte            // over the whole raw TOML text, not a re-serialisation
	data      map[string]string // the [data] table
}

// InitDataDigest returns the digest of an init-data TOML document with the
// algorithm its own "algorithm" field names, over the entire raw text: what
// a TEE's HOST_DATA/MRCONFIGID carries and what the KBS compares.
func InitDataDigest(tomlText []byte) (digest []byte, algorithm string, err error) {
	d, err := parseInitData(tomlText)
	if err != nil {
		return nil, "", err
	}
	return d.digest, d.algorithm, nil
}

func parseInitData(text []byte) (*initData, error) {
	var doc struct {
		Version   string            `toml:"version"`
		Algorithm string            `toml:"algorithm"`
		Data      map[string]string `toml:"data"`
	}
	md, err := toml.Decode(string(text), &doc)
	if err != nil {
		return nil, fmt.Errorf("parse TOML structured data: %v", err)
	}
	// The fields Trustee's Initdata struct requires (no serde defaults).
	for _, k := range []string{"version", "algorithm", "data"} {
		if !md.IsDefined(k) {
			return nil, fmt.Errorf("parse TOML structured data: missing field `%s`", k)
		}
	}
	var sum []byte
	switch doc.Algorithm {
	case "sha256":
		h := sha256.Sum256(text)
		sum = h[:]
	case "sha384":
		h := sha512.Sum384(text)
		sum = h[:]
	case "sha512":
		h := sha512.Sum512(text)
		sum = h[:]
	default:
		return nil, fmt.Errorf("algorithm %q is not sha256, sha384 or sha512", doc.Algorithm)
	}
	return &initData{algorithm: doc.Algorithm, digest: sum, data: doc.Data}, nil
}

// claims is the token's init_data_claims: the [data] table, with aa.toml
// and cdh.toml turned into JSON objects when they parse, as Trustee's
// attestation service does (its policy.rego extraction is not modelled; the
// rego text stays a string).
func (d *initData) claims() map[string]any {
	out := map[string]any{}
	for k, v := range d.data {
		out[k] = v
		if k == "aa.toml" || k == "cdh.toml" {
			var parsed map[string]any
			if _, err := toml.Decode(v, &parsed); err == nil {
				out[k] = parsed
			}
		}
	}
	return out
}

type initDataMode int

const (
	initDataAny initDataMode = iota
	initDataNone
	initDataDigest
)

// InitDataReference is what /attest demands of the init-data the client
// sends. Sample evidence has no hardware field binding the init-data, so the
// test KBS stands in for one: it compares the digest of the TOML that was
// sent with this reference. The zero value checks nothing.
type InitDataReference struct {
	mode   initDataMode
	digest []byte
}

// AnyInitData accepts init-data or its absence (the default).
func AnyInitData() InitDataReference { return InitDataReference{} }

// ExpectNoInitData refuses an attestation that carries init-data.
func ExpectNoInitData() InitDataReference { return InitDataReference{mode: initDataNone} }

// ExpectInitDataDigest requires init-data whose digest (with the algorithm
// the TOML names) equals digest.
func ExpectInitDataDigest(digest []byte) InitDataReference {
	return InitDataReference{mode: initDataDigest, digest: bytes.Clone(digest)}
}

// ExpectInitData requires init-data byte-identical in digest to tomlText.
func ExpectInitData(tomlText []byte) (InitDataReference, error) {
	d, _, err := InitDataDigest(tomlText)
	if err != nil {
		return InitDataReference{}, err
	}
	return ExpectInitDataDigest(d), nil
}

func (ref InitDataReference) String() string {
	switch ref.mode {
	case initDataNone:
		return "no init-data"
	case initDataDigest:
		return "init-data digest " + hex.EncodeToString(ref.digest)
	}
	return "any init-data"
}

func (ref InitDataReference) check(d *initData) error {
	switch ref.mode {
	case initDataNone:
		if d != nil {
			return errors.New("init-data present but this KBS expects none")
		}
	case initDataDigest:
		if d == nil {
			return fmt.Errorf("init-data missing: expected digest %x", ref.digest)
		}
		if !bytes.Equal(d.digest, ref.digest) {
			return fmt.Errorf("init-data digest mismatch: %s of the sent init-data is %x, expected %x", d.algorithm, d.digest, ref.digest)
		}
	}
	return nil
}
