package genpolicy

import (
	"regexp"
	"strings"
)

// value is what the generator knows of a string the kubelet will compute:
// a sequence of literal pieces and holes whose content is only known on the
// node (a Secret's value, the pod IP, a service address). A value without
// holes is pinned exactly; one that is only a hole matches anything; any
// other becomes an anchored regular expression.
type value struct {
	parts []piece
}

type piece struct {
	lit  string
	hole bool
}

func literal(s string) value { return value{parts: []piece{{lit: s}}} }

func unknown() value { return value{parts: []piece{{hole: true}}} }

func (v value) append(w value) value {
	out := value{parts: append([]piece(nil), v.parts...)}
	for _, p := range w.parts {
		n := len(out.parts)
		switch {
		case n > 0 && !p.hole && !out.parts[n-1].hole:
			out.parts[n-1].lit += p.lit
		case n > 0 && p.hole && out.parts[n-1].hole:
			// two holes in a row match what one does
		default:
			out.parts = append(out.parts, p)
		}
	}
	return out
}

// exact returns the string when the value has no hole.
func (v value) exact() (string, bool) {
	var b strings.Builder
	for _, p := range v.parts {
		if p.hole {
			return "", false
		}
		b.WriteString(p.lit)
	}
	return b.String(), true
}

// match is the value as the policy's matcher: exactly one of exact (a
// string), regex (anchored) or any (true) is set, the others null/false.
func (v value) match() map[string]any {
	if s, ok := v.exact(); ok {
		return matcher("exact", s)
	}
	if len(v.parts) == 1 {
		return matcher("any", true)
	}
	var b strings.Builder
	b.WriteString("^")
	for _, p := range v.parts {
		if p.hole {
			b.WriteString("(?s:.*)")
		} else {
			b.WriteString(regexp.QuoteMeta(p.lit))
		}
	}
	b.WriteString("$")
	return matcher("regex", b.String())
}

// matcher has every key (the policy's type checker needs them all).
func matcher(kind string, v any) map[string]any {
	m := map[string]any{"exact": nil, "regex": nil, "any": false, "optional": false}
	m[kind] = v
	return m
}

// expand replaces $(NAME) references the way the kubelet does for env
// values, command and args (Kubernetes "Define dependent environment
// variables"): $(NAME) becomes NAME's value when lookup knows NAME and
// stays as written otherwise; $$ is an escaped $ ($$(NAME) is the literal
// text $(NAME)); a $ before anything else, and an unterminated $(, stay as
// written.
func expand(s string, lookup func(name string) (value, bool)) value {
	out := value{}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			out = out.append(literal(lit.String()))
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			lit.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			lit.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				lit.WriteString(s[i:])
				i = len(s)
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				flush()
				out = out.append(v)
			} else {
				lit.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			lit.WriteByte('$')
		}
	}
	flush()
	if len(out.parts) == 0 {
		return literal("")
	}
	return out
}
