package jcs

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"strings"
	"testing"
)

// RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text
// (checked against node's JSON.stringify as well).
func TestNumbersAppendixB(t *testing.T) {
	vectors := []struct{ bits, want string }{
		{"0000000000000000", "0"},
		{"8000000000000000", "0"},
		{"0000000000000001", "5e-324"},
		{"8000000000000001", "-5e-324"},
		{"7fefffffffffffff", "1.7976931348623157e+308"},
		{"ffefffffffffffff", "-1.7976931348623157e+308"},
		{"4340000000000000", "9007199254740992"},
		{"c340000000000000", "-9007199254740992"},
		{"4430000000000000", "295147905179352830000"},
		{"44b52d02c7e14af5", "9.999999999999997e+22"},
		{"44b52d02c7e14af6", "1e+23"},
		{"44b52d02c7e14af7", "1.0000000000000001e+23"},
		{"444b1ae4d6e2ef4e", "999999999999999700000"},
		{"444b1ae4d6e2ef4f", "999999999999999900000"},
		{"444b1ae4d6e2ef50", "1e+21"},
		{"3eb0c6f7a0b5ed8c", "9.999999999999997e-7"},
		{"3eb0c6f7a0b5ed8d", "0.000001"},
		{"41b3de4355555553", "333333333.3333332"},
		{"41b3de4355555554", "333333333.33333325"},
		{"41b3de4355555555", "333333333.3333333"},
		{"41b3de4355555556", "333333333.3333334"},
		{"41b3de4355555557", "333333333.33333343"},
		{"becbf647612f3696", "-0.0000033333333333333333"},
		{"43143ff3c1cb0959", "1424953923781206.2"},
	}
	for _, v := range vectors {
		b, _ := hex.DecodeString(v.bits)
		f := math.Float64frombits(binary.BigEndian.Uint64(b))
		got, err := FormatFloat(f)
		if err != nil || got != v.want {
			t.Errorf("%s: got %q, %v; want %q", v.bits, got, err, v.want)
		}
	}
	for _, bits := range []string{"7fffffffffffffff", "7ff0000000000000", "fff0000000000000"} {
		b, _ := hex.DecodeString(bits)
		if s, err := FormatFloat(math.Float64frombits(binary.BigEndian.Uint64(b))); err == nil {
			t.Errorf("%s: got %q, want an error (no JSON form)", bits, s)
		}
	}
}

// RFC 8785 §3.2.2: the worked example (numbers, string escapes, literals).
func TestRFCExample(t *testing.T) {
	in := `{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`
	want := `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`
	got, err := Transform([]byte(in))
	if err != nil || string(got) != want {
		t.Fatalf("got %s, %v\nwant %s", got, err, want)
	}
}

// RFC 8785 §3.2.3: member names sort by UTF-16 code units, so U+1F600 (a
// surrogate pair, 0xD83D...) sorts before U+FB33.
func TestSortUTF16(t *testing.T) {
	in := `{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`
	got, err := Transform([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\"," +
		"\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}"
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestEscapes(t *testing.T) {
	in := "\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \\u007f\\u2028</>&\""
	want := "\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \u007f\u2028</>&\""
	got, err := Transform([]byte(in))
	if err != nil || string(got) != want {
		t.Fatalf("got %s, %v; want %s", got, err, want)
	}
}

func TestNested(t *testing.T) {
	got, err := Transform([]byte(` { "b" : [ {"z":1,"a":[]} , {} ], "a" : -0.0 } `))
	if err != nil || string(got) != `{"a":0,"b":[{"a":[],"z":1},{}]}` {
		t.Fatalf("got %s, %v", got, err)
	}
}

func TestRejects(t *testing.T) {
	for name, in := range map[string]string{
		"duplicate names": `{"a":1,"a":2}`,
		"overflow":        `[1e400]`,
		"invalid utf-8":   "\"\xff\"",
		"trailing":        `{} {}`,
		"truncated":       `{"a":`,
		"too deep":        strings.Repeat("[", maxDepth+2) + strings.Repeat("]", maxDepth+2),
	} {
		if got, err := Transform([]byte(in)); err == nil {
			t.Errorf("%s: got %s, want an error", name, got)
		}
	}
}

func TestMarshal(t *testing.T) {
	got, err := Marshal(map[string]any{"tee-pubkey": map[string]string{"y": "Y", "x": "X", "kty": "EC"}, "nonce": "<n>", "additional-evidence": ""})
	want := `{"additional-evidence":"","nonce":"<n>","tee-pubkey":{"kty":"EC","x":"X","y":"Y"}}`
	if err != nil || string(got) != want {
		t.Fatalf("got %s, %v; want %s", got, err, want)
	}
}
