// Package initdata reads, validates and digests CoCo init-data: the TOML
// document a pod hands to its confidential VM (Key Broker settings, agent
// policy, guest configuration). Host and guest use this one implementation so
// that both hash byte-identical text and accept exactly the same documents.
//
// Format (trustee kbs/docs/initdata.md, as implemented by kata-types and the
// attestation agent):
//
//	version = "0.1.0"
//	algorithm = "sha256" | "sha384" | "sha512"
//	[data]
//	"aa.toml" = '''...'''
//	"cdh.toml" = '''...'''
//	"policy.rego" = '''...'''
//
// The digest is HASH(algorithm) over the raw TOML bytes exactly as delivered,
// never over a re-serialisation.
package initdata

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"
)

const (
	// AnnotationKey is the pod annotation carrying base64(gzip(TOML)).
	AnnotationKey = "io.katacontainers.config.hypervisor.cc_init_data"
	// Version is the only init-data version the CoCo components accept.
	Version = "0.1.0"

	// MaxSize bounds the raw (decompressed) TOML document. Kubernetes caps
	// all annotations of an object at 256 KiB, so a larger document could
	// never have come from a pod anyway; the bound also makes gzip bombs
	// harmless.
	MaxSize = 256 << 10
	// MaxEntries bounds the number of [data] entries.
	MaxEntries = 64
	// MaxKeyLen bounds the length of a [data] key (it names a file).
	MaxKeyLen = 255
)

// Well-known [data] entries.
const (
	KeyAA     = "aa.toml"     // attestation agent configuration
	KeyCDH    = "cdh.toml"    // confidential data hub configuration
	KeyPolicy = "policy.rego" // agent policy
)

// Algorithm is a digest algorithm allowed in init-data.
type Algorithm string

const (
	SHA256 Algorithm = "sha256"
	SHA384 Algorithm = "sha384"
	SHA512 Algorithm = "sha512"
)

// Algorithms lists the accepted algorithm names in order of digest size.
func Algorithms() []Algorithm { return []Algorithm{SHA256, SHA384, SHA512} }

// New returns a fresh hash for the algorithm, or nil for an unknown one.
func (a Algorithm) New() hash.Hash {
	switch a {
	case SHA256:
		return sha256.New()
	case SHA384:
		return sha512.New384()
	case SHA512:
		return sha512.New()
	}
	return nil
}

// Size is the digest length in bytes (0 for an unknown algorithm).
func (a Algorithm) Size() int {
	if h := a.New(); h != nil {
		return h.Size()
	}
	return 0
}

// InitData is a validated init-data document together with the exact bytes
// it was parsed from.
type InitData struct {
	Version   string
	Algorithm Algorithm
	// Data holds the [data] table. Treat it as read-only.
	Data map[string]string

	raw []byte
}

// Raw returns the TOML bytes the document was parsed from. The digest is
// over these bytes; callers must not modify the returned slice.
func (id *InitData) Raw() []byte { return id.raw }

// Digest is HASH(algorithm) over the raw TOML bytes.
func (id *InitData) Digest() []byte {
	h := id.Algorithm.New()
	h.Write(id.raw)
	return h.Sum(nil)
}

// Get returns one [data] entry.
func (id *InitData) Get(key string) (string, bool) {
	v, ok := id.Data[key]
	return v, ok
}

// topLevelKeys are the only keys allowed outside [data]; anything else is
// rejected so a typo ("algorithim") cannot silently change meaning.
var topLevelKeys = []string{"version", "algorithm", "data"}

func invalid(format string, args ...any) error {
	return fmt.Errorf("init-data: "+format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

func algorithmList() string {
	names := make([]string, 0, 3)
	for _, a := range Algorithms() {
		names = append(names, fmt.Sprintf("%q", a))
	}
	return strings.Join(names, ", ")
}

// Parse validates a raw TOML init-data document. Every rejection wraps
// errdefs.ErrInvalidArgument and names the offending field and what is
// allowed there.
func Parse(raw []byte) (*InitData, error) {
	if len(raw) == 0 {
		return nil, invalid("document is empty; want a TOML document with version, algorithm and [data]")
	}
	if len(raw) > MaxSize {
		return nil, invalid("document is %d bytes, over the %d-byte limit; move large content out of init-data", len(raw), MaxSize)
	}
	if !utf8.Valid(raw) {
		return nil, invalid("document is not valid UTF-8 text; want a TOML document")
	}
	var doc map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(raw)).Decode(&doc); err != nil {
		return nil, invalid("not valid TOML: %s", tomlError(err))
	}
	unknown := make([]string, 0)
	for k := range doc {
		if !contains(topLevelKeys, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, invalid("unknown top-level key %q; allowed keys: version, algorithm, [data]", unknown[0])
	}

	// Own copy: the digest must not change if the caller reuses its buffer.
	id := &InitData{raw: append([]byte(nil), raw...)}
	v, ok := doc["version"]
	if !ok {
		return nil, invalid("version: missing; set version = %q", Version)
	}
	s, ok := v.(string)
	if !ok {
		return nil, invalid("version: must be a string, got %s; set version = %q", tomlType(v), Version)
	}
	if s != Version {
		return nil, invalid("version: %q is not supported; allowed: %q", s, Version)
	}
	id.Version = s

	v, ok = doc["algorithm"]
	if !ok {
		return nil, invalid("algorithm: missing; allowed: %s", algorithmList())
	}
	s, ok = v.(string)
	if !ok {
		return nil, invalid("algorithm: must be a string, got %s; allowed: %s", tomlType(v), algorithmList())
	}
	if Algorithm(s).New() == nil {
		return nil, invalid("algorithm: %q is not supported; allowed: %s", s, algorithmList())
	}
	id.Algorithm = Algorithm(s)

	v, ok = doc["data"]
	if !ok {
		return nil, invalid("data: missing; add a [data] table (it may be empty)")
	}
	table, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("data: must be a table of strings, got %s", tomlType(v))
	}
	if len(table) > MaxEntries {
		return nil, invalid("data: %d entries, over the limit of %d", len(table), MaxEntries)
	}
	id.Data = make(map[string]string, len(table))
	for k, v := range table {
		if k == "" || len(k) > MaxKeyLen {
			return nil, invalid("data: key %q must be 1 to %d bytes long", k, MaxKeyLen)
		}
		s, ok := v.(string)
		if !ok {
			return nil, invalid("data.%q: must be a string, got %s", k, tomlType(v))
		}
		id.Data[k] = s
	}
	return id, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// tomlError keeps the decoder's message short: the position and the reason,
// without echoing the (possibly large) document.
func tomlError(err error) string {
	if pe, ok := err.(toml.ParseError); ok {
		return fmt.Sprintf("line %d, column %d: %s", pe.Position.Line, pe.Position.Col, pe.Message)
	}
	return err.Error()
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("a %T", v)
}
