// Package jcs writes the RFC 8785 JSON Canonicalization Scheme: the one byte
// form of a JSON value that the attestation client and the Trustee
// attestation service both hash to bind runtime data (the nonce and the
// guest's public key) into a TEE report. Both sides must produce identical
// bytes, so this follows the RFC to the letter:
//
//   - no whitespace;
//   - object members sorted by their names compared as UTF-16 code units;
//   - strings escaped as ECMAScript's JSON.stringify does (only '"', '\\' and
//     the C0 controls; \b \t \n \f \r in short form, the rest as \u00xx with
//     lowercase hex; everything else, '/' and U+2028 included, written raw);
//   - numbers as IEEE 754 doubles written by ECMAScript's Number.toString.
//
// Input that is not I-JSON (invalid UTF-8, duplicate member names, numbers
// outside the double range) is an error rather than silently rewritten.
package jcs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 256

// Transform returns the canonical form of the JSON text in.
func Transform(in []byte) ([]byte, error) {
	if !utf8.Valid(in) {
		return nil, errors.New("jcs: input is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	var out bytes.Buffer
	if err := value(dec, &out, 0); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("jcs: trailing data after the JSON value")
	}
	return out.Bytes(), nil
}

// Marshal encodes v with encoding/json (HTML escaping off, which JCS would
// undo anyway) and canonicalises the result.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return Transform(b.Bytes())
}

func value(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("jcs: nesting deeper than %d", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("jcs: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return object(dec, out, depth)
		case '[':
			return array(dec, out, depth)
		}
		return fmt.Errorf("jcs: unexpected %q", t)
	case string:
		writeString(out, t)
	case json.Number:
		s, err := Number(string(t))
		if err != nil {
			return err
		}
		out.WriteString(s)
	case bool:
		out.WriteString(strconv.FormatBool(t))
	case nil:
		out.WriteString("null")
	default:
		return fmt.Errorf("jcs: unexpected token %v", tok)
	}
	return nil
}

func array(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	out.WriteByte('[')
	for i := 0; dec.More(); i++ {
		if i > 0 {
			out.WriteByte(',')
		}
		if err := value(dec, out, depth+1); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // ']'
		return fmt.Errorf("jcs: %w", err)
	}
	out.WriteByte(']')
	return nil
}

type member struct {
	name  string
	key   []uint16 // the name as UTF-16 code units, the RFC's sort key
	value []byte
}

func object(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	var members []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("jcs: %w", err)
		}
		name, ok := tok.(string)
		if !ok {
			return fmt.Errorf("jcs: object member name is %v, not a string", tok)
		}
		if seen[name] {
			return fmt.Errorf("jcs: duplicate member name %q", name)
		}
		seen[name] = true
		var v bytes.Buffer
		if err := value(dec, &v, depth+1); err != nil {
			return err
		}
		members = append(members, member{name: name, key: utf16.Encode([]rune(name)), value: v.Bytes()})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return fmt.Errorf("jcs: %w", err)
	}
	// Sorting by UTF-16 code units differs from Go's byte (code point) order
	// for names mixing supplementary-plane characters with U+E000..U+FFFF.
	slices.SortFunc(members, func(a, b member) int { return slices.Compare(a.key, b.key) })
	out.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			out.WriteByte(',')
		}
		writeString(out, m.name)
		out.WriteByte(':')
		out.Write(m.value)
	}
	out.WriteByte('}')
	return nil
}

// writeString writes s as ECMAScript JSON.stringify (RFC 8785 §3.2.2.2).
func writeString(out *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	out.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			out.WriteString(`\"`)
		case '\\':
			out.WriteString(`\\`)
		case '\b':
			out.WriteString(`\b`)
		case '\f':
			out.WriteString(`\f`)
		case '\n':
			out.WriteString(`\n`)
		case '\r':
			out.WriteString(`\r`)
		case '\t':
			out.WriteString(`\t`)
		default:
			if r < 0x20 {
				out.WriteString(`\u00`)
				out.WriteByte(hex[r>>4])
				out.WriteByte(hex[r&0xf])
			} else {
				out.WriteRune(r)
			}
		}
	}
	out.WriteByte('"')
}

// Number writes the JSON number literal lit as RFC 8785 §3.2.2.3 requires:
// the nearest IEEE 754 double, formatted by ECMAScript's Number.toString.
func Number(lit string) (string, error) {
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		// ParseFloat reports overflow (1e400) as ErrRange; I-JSON has no
		// such numbers.
		return "", fmt.Errorf("jcs: number %s is not an IEEE 754 double: %w", lit, err)
	}
	return FormatFloat(f)
}

// FormatFloat formats f as ECMAScript's Number.prototype.toString (ECMA-262
// §7.1.12.1): the shortest digits that round-trip, plain notation for
// exponents in [-6, 21), exponent notation otherwise. NaN and the
// infinities have no JSON form.
func FormatFloat(f float64) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("jcs: %v has no JSON form", f)
	}
	if f == 0 {
		return "0", nil // -0 too
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	// 'e' with precision -1 gives the shortest round-tripping digits:
	// d[.ddd]e±XX. ECMAScript calls the digit count k and the decimal
	// exponent n, with value = digits × 10^(n-k).
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, err := strconv.Atoi(exp)
	if err != nil {
		return "", fmt.Errorf("jcs: formatting %v: %w", f, err)
	}
	k, n := len(digits), x+1
	var s string
	switch {
	case k <= n && n <= 21:
		s = digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		s = digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		s = "0." + strings.Repeat("0", -n) + digits
	default:
		s = digits[:1]
		if k > 1 {
			s += "." + digits[1:]
		}
		if n-1 >= 0 {
			s += "e+" + strconv.Itoa(n-1)
		} else {
			s += "e-" + strconv.Itoa(1-n)
		}
	}
	return sign + s, nil
}
