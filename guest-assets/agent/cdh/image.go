package cdh

import (
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"
)

// ImageSettings are the owner's choices for pulling images in the guest,
// from init-data's cdh.toml [image] table (guest-components' keys; others
// there are ignored, as guest-components does).
type ImageSettings struct {
	// PolicyURI is a kbs:/// resource holding a containers-policy.json;
	// Policy is one inline. The URI wins, as in guest-components.
	PolicyURI string
	Policy    string
	// CredentialsURI is a kbs:/// resource holding a docker config.json
	// with the registries' credentials.
	CredentialsURI string
	// PlainHTTP are the registries (host[:port]) the owner marked
	// insecure in the inline registry configuration.
	PlainHTTP []string
}

type cdhImageFile struct {
	Image struct {
		PolicyURI      string `toml:"image_security_policy_uri"`
		Policy         string `toml:"image_security_policy"`
		CredentialsURI string `toml:"authenticated_registry_credentials_uri"`
		RegistryConfig struct {
			Registries []struct {
				Location string `toml:"location"`
				Prefix   string `toml:"prefix"`
				Insecure bool   `toml:"insecure"`
			} `toml:"registry"`
		} `toml:"registry_config"`
	} `toml:"image"`
}

// ParseImageSettings reads cdh.toml's [image] table; empty text is no
// settings.
func ParseImageSettings(cdhTOML []byte) (*ImageSettings, error) {
	var f cdhImageFile
	if _, err := toml.Decode(string(cdhTOML), &f); err != nil {
		return nil, fmt.Errorf("init-data cdh.toml: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	s := &ImageSettings{
		PolicyURI:      f.Image.PolicyURI,
		Policy:         f.Image.Policy,
		CredentialsURI: f.Image.CredentialsURI,
	}
	for _, uri := range []struct{ field, v string }{
		{"image.image_security_policy_uri", s.PolicyURI},
		{"image.authenticated_registry_credentials_uri", s.CredentialsURI},
	} {
		if uri.v != "" && !strings.HasPrefix(uri.v, "kbs://") {
			return nil, fmt.Errorf("init-data cdh.toml %s = %q: want a kbs:///<repo>/<type>/<tag> resource: %w", uri.field, uri.v, errdefs.ErrInvalidArgument)
		}
	}
	for i, r := range f.Image.RegistryConfig.Registries {
		loc := r.Location
		if loc == "" {
			loc = r.Prefix
		}
		if loc == "" || strings.ContainsAny(loc, "/ ") {
			return nil, fmt.Errorf("init-data cdh.toml image.registry_config.registry[%d].location %q: want a registry host[:port]: %w", i, loc, errdefs.ErrInvalidArgument)
		}
		if r.Insecure {
			s.PlainHTTP = append(s.PlainHTTP, loc)
		}
	}
	return s, nil
}
