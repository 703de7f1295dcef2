package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Policy is the subset of containers-policy.json(5) the guest enforces:
//
//	{"default":[REQ...], "transports":{"docker":{SCOPE:[REQ...]}}}
//
// A scope is "registry/repo:tag", "registry/repo@digest", "registry/repo",
// a parent namespace "registry/ns", "registry", "*.domain", or "". The most
// specific scope that matches the image wins (longest prefix at path-segment
// boundaries, then wildcards, then ""), else "default"; every requirement of
// the chosen list must pass. Requirement types:
//
//   - insecureAcceptAnything
//   - reject
//   - sigstoreSigned with keyPath or keyData and an optional signedIdentity:
//     cosign signatures with a public key, no Rekor, Fulcio or
//     transparency log (a policy asking for them is refused at parse).
//
// signedBy (GPG "simple signing") is NOT supported: a policy using it is
// refused at parse rather than silently weakened. Other transports than
// "docker" are accepted and ignored (the guest only pulls from registries).
type Policy struct {
	Default    []Requirement                       `json:"default"`
	Transports map[string]map[string][]Requirement `json:"transports"`
}

// Requirement is one policy requirement.
type Requirement struct {
	Type string `json:"type"`
	// KeyType is signedBy's (GPGKeys); parsed only to refuse signedBy by name.
	KeyType string `json:"keyType,omitempty"`
	// KeyPath is "kbs:///repo/type/tag" (fetched from the KBS), or an
	// absolute path in the guest (optionally file://).
	KeyPath string `json:"keyPath,omitempty"`
	// KeyData is the public key PEM, raw (as image-rs reads it) or
	// base64 (as containers-policy.json(5) documents it).
	KeyData        string    `json:"keyData,omitempty"`
	SignedIdentity *Identity `json:"signedIdentity,omitempty"`
}

// Identity is a signedIdentity: how the reference in the signature must
// relate to the image's.
type Identity struct {
	// Type: matchRepoDigestOrExact (default), matchRepository, matchExact,
	// exactRepository (with DockerRepository), exactReference (with
	// DockerReference).
	Type             string `json:"type"`
	DockerRepository string `json:"dockerRepository,omitempty"`
	DockerReference  string `json:"dockerReference,omitempty"`
}

// PolicyError is an image the policy refuses.
type PolicyError struct {
	Image       string // the reference, as pulled
	Scope       string // the policy scope that applied ("default" for the default)
	Requirement string // the requirement type that failed
	Reason      string
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("image %s refused by the image signature policy (scope %q, %s): %s", e.Image, e.Scope, e.Requirement, e.Reason)
}

// ParsePolicy decodes a policy document strictly: unknown fields and
// requirement types are errors, so a requirement we cannot enforce is never
// dropped without a word.
func ParsePolicy(data []byte) (*Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("image policy: %w", err)
	}
	if p.Default == nil {
		return nil, fmt.Errorf("image policy: \"default\" is missing (use [{\"type\":\"reject\"}] to refuse unlisted images)")
	}
	if err := validate("default", p.Default); err != nil {
		return nil, err
	}
	for scope, reqs := range p.Transports["docker"] {
		if err := validate(scope, reqs); err != nil {
			return nil, err
		}
	}
	return &p, nil
}

func validate(scope string, reqs []Requirement) error {
	if len(reqs) == 0 {
		return fmt.Errorf("image policy: scope %q has no requirements", scope)
	}
	for _, r := range reqs {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("image policy: scope %q: %s: %s", scope, r.Type, fmt.Sprintf(format, args...))
		}
		switch r.Type {
		case "insecureAcceptAnything", "reject":
			if r.KeyPath != "" || r.KeyData != "" || r.SignedIdentity != nil {
				return bad("takes no keys or identity")
			}
		case "signedBy":
			return bad("GPG simple signing is not supported in the guest; sign with cosign and use sigstoreSigned")
		case "sigstoreSigned":
			if (r.KeyPath == "") == (r.KeyData == "") {
				return bad("give exactly one of keyPath and keyData")
			}
			if r.KeyPath != "" && !strings.HasPrefix(r.KeyPath, "kbs:///") && !strings.HasPrefix(strings.TrimPrefix(r.KeyPath, "file://"), "/") {
				return bad("keyPath %q is neither kbs:/// nor an absolute path", r.KeyPath)
			}
			if id := r.SignedIdentity; id != nil {
				switch id.Type {
				case "matchRepoDigestOrExact", "matchRepository", "matchExact":
				case "exactRepository":
					if _, err := name.NewRepository(id.DockerRepository); err != nil {
						return bad("exactRepository: %v", err)
					}
				case "exactReference":
					if _, err := name.ParseReference(id.DockerReference); err != nil {
						return bad("exactReference: %v", err)
					}
				default:
					return bad("signedIdentity type %q is not supported", id.Type)
				}
			}
		default:
			return fmt.Errorf("image policy: scope %q: requirement type %q is not supported", scope, r.Type)
		}
	}
	return nil
}

// policyRepo is the repository as policies spell it: Docker Hub is
// "docker.io", not go-containerregistry's "index.docker.io".
func policyRepo(r name.Repository) string {
	reg := r.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.RepositoryStr()
}

// scopes lists the docker scopes that could match r, most specific first.
func scopes(r name.Reference) []string {
	repo := policyRepo(r.Context())
	var out []string
	if d, ok := r.(name.Digest); ok {
		out = append(out, repo+"@"+d.DigestStr())
	} else {
		out = append(out, repo+":"+r.Identifier())
	}
	for s := repo; ; {
		out = append(out, s)
		i := strings.LastIndex(s, "/")
		if i < 0 {
			break
		}
		s = s[:i]
	}
	host := strings.Split(r.Context().RegistryStr(), ":")[0]
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	parts := strings.Split(host, ".")
	for i := 1; i < len(parts); i++ {
		out = append(out, "*."+strings.Join(parts[i:], "."))
	}
	return append(out, "")
}

// requirements returns the scope that applies to r and its requirements.
func (p *Policy) requirements(r name.Reference) (string, []Requirement) {
	docker := p.Transports["docker"]
	for _, s := range scopes(r) {
		if reqs, ok := docker[s]; ok {
			return s, reqs
		}
	}
	return "default", p.Default
}

// check applies the policy to a resolved image; it returns a description of
// what admitted it.
func (p *Policy) check(ctx context.Context, t *checkTarget) (string, error) {
	scope, reqs := p.requirements(t.ref)
	var ok []string
	for _, r := range reqs {
		refuse := func(reason string) error {
			return &PolicyError{Image: t.ref.Name(), Scope: scope, Requirement: r.Type, Reason: reason}
		}
		switch r.Type {
		case "insecureAcceptAnything":
		case "reject":
			return "", refuse("the policy rejects this image")
		case "sigstoreSigned":
			if err := t.verifySigstore(ctx, r); err != nil {
				return "", refuse(err.Error())
			}
		default: // ParsePolicy refuses these; a hand-built Policy may not have been parsed
			return "", refuse("unsupported requirement type")
		}
		ok = append(ok, r.Type)
	}
	return fmt.Sprintf("%s (scope %q)", strings.Join(ok, ", "), scope), nil
}
