package genpolicy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

// InitData is the init-data TOML carrying the policy and the attestation
// agent's and confidential data hub's configs as given (empty: left out).
// The document is checked with the same parser the shim and guest use.
func InitData(policy, aaToml, cdhToml, algorithm string) ([]byte, error) {
	if algorithm == "" {
		algorithm = "sha384"
	}
	entries := map[string]string{initdata.KeyPolicy: policy}
	if aaToml != "" {
		entries[initdata.KeyAA] = aaToml
	}
	if cdhToml != "" {
		entries[initdata.KeyCDH] = cdhToml
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version = %q\nalgorithm = %q\n\n[data]\n", initdata.Version, algorithm)
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%q = %s\n", k, tomlString(entries[k]))
	}
	raw := []byte(b.String())
	if _, err := initdata.Parse(raw); err != nil {
		return nil, fmt.Errorf("generated init-data does not parse: %w", err)
	}
	return raw, nil
}

// tomlString writes s as a multi-line literal string when it can (readable:
// the Rego appears as is), else as a basic string with escapes.
func tomlString(s string) string {
	if !strings.Contains(s, "'''") && !strings.ContainsAny(s, "\r\x00\x7f") && !strings.HasSuffix(s, "'") {
		return "'''\n" + s + "'''"
	}
	q := strconv.Quote(s)
	// TOML basic strings take \uXXXX but not Go's \xXX.
	var out strings.Builder
	for i := 0; i < len(q); i++ {
		if q[i] == '\\' && i+1 < len(q) && q[i+1] == 'x' {
			fmt.Fprintf(&out, "\\u00%s", q[i+2:i+4])
			i += 3
			continue
		}
		if q[i] == '\\' && i+1 < len(q) {
			out.WriteString(q[i : i+2])
			i++
			continue
		}
		out.WriteByte(q[i])
	}
	return out.String()
}

// Annotation is the pod annotation value carrying raw: base64(gzip(TOML)).
func Annotation(raw []byte) string { return initdata.Encode(raw) }
