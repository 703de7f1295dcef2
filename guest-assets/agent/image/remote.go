package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is how to reach registries: credentials, plain-HTTP exceptions and
// the HTTP transport. Pull and the user commands (Sign, EncryptImage's
// sources and destinations) share it.
type Registry struct {
	// Credentials is a docker config.json ({"auths":{host:{auth|username,
	// password|identitytoken|registrytoken}}}). In the guest it comes from
	// the KBS after attestation, never from the host: the host must not be
	// able to choose which account the guest pulls with, nor read it.
	Credentials []byte
	// PlainHTTP lists registries (host[:port] as in the reference) the guest
	// may reach over plain HTTP. Everything else is HTTPS only — even
	// RFC 1918 and loopback addresses, where go-containerregistry would
	// otherwise fall back to HTTP silently and send the credentials in clear.
	PlainHTTP []string
	// Transport carries the requests (nil: a clone of http.DefaultTransport).
	// The agent sets it to bound connection and header timeouts.
	Transport http.RoundTripper
}

// dockerConfig is the part of config.json we read. credsStore and
// credHelpers name host programs, which mean nothing in the guest: refused
// rather than ignored, so a user sees why their credentials were not used.
type dockerConfig struct {
	Auths       map[string]authn.AuthConfig `json:"auths"`
	CredsStore  string                      `json:"credsStore"`
	CredHelpers map[string]string           `json:"credHelpers"`
}

// keychain resolves credentials by registry host from one config.json.
type keychain map[string]authn.AuthConfig

// parseCredentials reads a docker config.json. Errors never quote the
// document: it holds secrets.
func parseCredentials(data []byte) (keychain, error) {
	kc := keychain{}
	if len(data) == 0 {
		return kc, nil
	}
	var cfg dockerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("registry credentials: not a docker config.json (%s)", jsonErrorKind(err))
	}
	if cfg.CredsStore != "" || len(cfg.CredHelpers) > 0 {
		return nil, errors.New("registry credentials: credsStore/credHelpers name host programs; put the credentials inline under \"auths\"")
	}
	for k, a := range cfg.Auths {
		kc[registryHost(k)] = a
	}
	return kc, nil
}

// jsonErrorKind describes a JSON error without echoing the input.
func jsonErrorKind(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	}
	return "invalid JSON"
}

// registryHost normalises an "auths" key: docker writes bare hosts,
// "https://host/v1/" (Docker Hub) and sometimes full URLs.
func registryHost(k string) string {
	if u, err := url.Parse(k); err == nil && u.Host != "" {
		k = u.Host
	}
	k = strings.TrimSuffix(k, "/")
	if k == "docker.io" || k == "registry-1.docker.io" {
		return name.DefaultRegistry
	}
	return k
}

func (kc keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if a, ok := kc[registryHost(r.RegistryStr())]; ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}

// httpsOnly refuses plain-HTTP requests to registries not in allow: it sees
// every request go-containerregistry makes, including its ping fallback and
// redirects to blob storage.
type httpsOnly struct {
	next  http.RoundTripper
	allow map[string]bool
}

func (t httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" && !t.allow[r.URL.Host] {
		return nil, fmt.Errorf("plain HTTP to %s refused: the guest pulls over HTTPS unless the registry is allowed plain HTTP", r.URL.Host)
	}
	return t.next.RoundTrip(r)
}

// remote holds what one pull or push needs to reach a registry.
type remoteClient struct {
	keys      keychain
	plain     map[string]bool
	transport http.RoundTripper
}

func (r *Registry) client() (*remoteClient, error) {
	keys, err := parseCredentials(r.Credentials)
	if err != nil {
		return nil, err
	}
	c := &remoteClient{keys: keys, plain: map[string]bool{}}
	for _, h := range r.PlainHTTP {
		c.plain[h] = true
	}
	next := r.Transport
	if next == nil {
		next = http.DefaultTransport.(*http.Transport).Clone()
	}
	c.transport = httpsOnly{next: next, allow: c.plain}
	return c, nil
}

// parse reads an image reference; registries allowed plain HTTP get
// name.Insecure so that go-containerregistry speaks HTTP to them at all.
func (c *remoteClient) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	if c.plain[r.Context().RegistryStr()] {
		r, err = name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("image reference %q: %w", ref, err)
		}
	}
	return r, nil
}

func (c *remoteClient) options(ctx context.Context, extra ...remote.Option) []remote.Option {
	return append([]remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(c.transport),
		remote.WithAuthFromKeychain(c.keys),
		remote.WithUserAgent("coco-agent"),
	}, extra...)
}

// RemoteOptions parses ref and returns go-containerregistry options that
// reach its registry as reg says (for the user commands).
func RemoteOptions(ctx context.Context, ref string, reg Registry) ([]remote.Option, name.Reference, error) {
	c, err := reg.client()
	if err != nil {
		return nil, nil, err
	}
	n, err := c.parse(ref)
	if err != nil {
		return nil, nil, err
	}
	return c.options(ctx), n, nil
}
