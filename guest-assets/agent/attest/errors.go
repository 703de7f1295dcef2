package attest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrNoKBS means the owner's init-data configures no Key Broker Service:
// no aa.toml/cdh.toml with a KBS URL, or cdh.toml selects offline_fs_kbc.
// Resource and token requests then fail with it (errors.Is), never panic.
var ErrNoKBS = errors.New("no KBS configured")

// ConfigError is a bad aa.toml or cdh.toml: which file, which field, what
// to do about it.
type ConfigError struct {
	File  string // "aa.toml", "cdh.toml"
	Field string // TOML path, "token_configs.kbs.url"
	Msg   string // what is wrong and the fix
	Err   error  // ErrNoKBS, a TOML or PEM error, or nil
}

func (e *ConfigError) Error() string {
	s := "init-data " + e.File
	if e.Field != "" {
		s += " " + e.Field
	}
	s += ": " + e.Msg
	if e.Err != nil && !errors.Is(e.Err, ErrNoKBS) {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ConfigError) Unwrap() error { return e.Err }

// UnreachableError is a KBS the guest could not talk to: dial, TLS
// (including a certificate that is not the pinned one) or timeout.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("KBS %s unreachable: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// RefusedError is the KBS saying no to the attestation itself (/auth or
// /attest): its error body's short type ("AttestationError",
// "PolicyDeny"...) and detail.
type RefusedError struct {
	URL    string // the endpoint that refused
	Status int
	Type   string // last path segment of the KBS error type URI
	Detail string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("attestation refused by KBS %s (HTTP %d %s): %s", e.URL, e.Status, orUnknown(e.Type), e.Detail)
}

// ResourceError is a resource the KBS would not hand out: missing (404),
// forbidden by its resource policy (401/403 after a fresh attestation), or
// any other refusal. Body is the KBS's answer, truncated.
type ResourceError struct {
	Resource string // repo/type/tag
	URL      string
	Status   int
	Type     string // short KBS error type when the body had one
	Detail   string
	Body     string
}

func (e *ResourceError) Error() string {
	what := "refused"
	switch e.Status {
	case 404:
		what = "not found"
	case 401, 403:
		what = "forbidden"
	}
	s := fmt.Sprintf("KBS resource %s %s (HTTP %d from %s)", e.Resource, what, e.Status, e.URL)
	if e.Type != "" || e.Detail != "" {
		return s + ": " + orUnknown(e.Type) + ": " + e.Detail
	}
	if e.Body != "" {
		return s + ": " + e.Body
	}
	return s
}

// BadResponseError is a KBS answer the client cannot use: wrong status,
// malformed JSON, a missing or malformed field, an oversized body, a JWE that
// does not decrypt.
type BadResponseError struct {
	URL   string
	Field string // "nonce", "token", "JWE", "body"...
	Err   error
}

func (e *BadResponseError) Error() string {
	return fmt.Sprintf("bad response from KBS %s: %s: %v", e.URL, e.Field, e.Err)
}

func (e *BadResponseError) Unwrap() error { return e.Err }

// kbsError is the KBS's error body (trustee kbs/src/error.rs):
// {"type":"https://github.com/confidential-containers/kbs/errors/<Type>","detail":"..."}.
type kbsError struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// parseKBSError reads a KBS error body; ok is false when it is not one.
func parseKBSError(body []byte) (typ, detail string, ok bool) {
	var e kbsError
	if json.Unmarshal(body, &e) != nil || (e.Type == "" && e.Detail == "") {
		return "", "", false
	}
	typ = e.Type
	if i := strings.LastIndexByte(typ, '/'); i >= 0 {
		typ = typ[i+1:]
	}
	return clip(typ, 64), clip(e.Detail, maxErrorText), true
}

// maxErrorText bounds KBS-supplied text quoted in an error: it ends up in
// CRI errors and logs.
const maxErrorText = 512

// clip shortens s to at most n bytes on a rune boundary and makes it
// printable on one line.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(truncated)"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown error"
	}
	return s
}
