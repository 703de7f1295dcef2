package attest

import (
	"fmt"
	"strings"
)

// ResourcePath names a KBS resource: GET /kbs/v0/resource/<Repo>/<Type>/<Tag>.
type ResourcePath struct {
	Repo, Type, Tag string
}

func (p ResourcePath) String() string { return p.Repo + "/" + p.Type + "/" + p.Tag }

// URI is the resource's kbs:/// form.
func (p ResourcePath) URI() string { return "kbs:///" + p.String() }

// maxSegment bounds one path segment; KBS resource names are short.
const maxSegment = 128

// NewResourcePath validates the three segments. Each must be non-empty, not
// "." or "..", and made of ASCII letters, digits and "-_.+=@~" — enough for
// every name the CoCo tests and docs use, and nothing a URL or a path join
// could reinterpret (no "/", "%", "?", "#", "\", spaces or controls).
func NewResourcePath(repo, typ, tag string) (ResourcePath, error) {
	p := ResourcePath{repo, typ, tag}
	for _, s := range []struct{ name, v string }{{"repo", repo}, {"type", typ}, {"tag", tag}} {
		if err := checkSegment(s.v); err != nil {
			return ResourcePath{}, fmt.Errorf("KBS resource %s: %s %w", clip(p.String(), 3*maxSegment), s.name, err)
		}
	}
	return p, nil
}

func checkSegment(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is empty")
	case s == "." || s == "..":
		return fmt.Errorf("is %q", s)
	case len(s) > maxSegment:
		return fmt.Errorf("is longer than %d bytes", maxSegment)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.+=@~", c) >= 0
		if !ok {
			return fmt.Errorf("has %q, which is not allowed (letters, digits and -_.+=@~ only)", rune(c))
		}
	}
	return nil
}

// ParseResource accepts a resource as "kbs://[host[:port]]/repo/type/tag"
// or as a bare "repo/type/tag" (the form of the CDH REST path
// /cdh/resource/repo/type/tag). As in guest-components' ResourceUri, the
// host part of a kbs:// URI is ignored: the resource comes from the KBS the
// owner configured, never from one a URI names. Other plugins
// (kbs+<plugin>://) and query strings are not supported.
func ParseResource(s string) (ResourcePath, error) {
	rest := s
	if r, ok := strings.CutPrefix(s, "kbs://"); ok {
		i := strings.IndexByte(r, '/')
		if i < 0 {
			return ResourcePath{}, fmt.Errorf("KBS resource URI %q has no path; write kbs:///<repo>/<type>/<tag>", clip(s, 256))
		}
		rest = r[i+1:]
	} else if strings.HasPrefix(s, "kbs+") {
		return ResourcePath{}, fmt.Errorf("KBS resource URI %q names a KBS plugin; only kbs:///<repo>/<type>/<tag> resources are supported", clip(s, 256))
	} else if strings.Contains(s, "://") {
		return ResourcePath{}, fmt.Errorf("resource %q is not a kbs:// URI", clip(s, 256))
	}
	if strings.ContainsAny(rest, "?#") {
		return ResourcePath{}, fmt.Errorf("KBS resource %q has a query or fragment, which is not supported", clip(s, 256))
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return ResourcePath{}, fmt.Errorf("KBS resource %q must have exactly three segments, <repo>/<type>/<tag>", clip(s, 256))
	}
	return NewResourcePath(parts[0], parts[1], parts[2])
}
