package attest

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/BurntSushi/toml"
)

// File names of the init-data entries the configuration comes from. The
// agent reads them from the owner's init-data, which the TEE binds into its
// launch data; it never takes KBS settings from the host (no kernel
// command line aa_kbc_params, no agent request), unlike guest-components,
// which falls back to the kernel command line when aa.toml is absent.
const (
	AAFile  = "aa.toml"
	CDHFile = "cdh.toml"
)

// KeyAlgorithm is the kind of ephemeral key the guest gives the KBS to wrap
// resources to (aa.toml token_configs.kbs.tee_key_algorithm; the names are
// guest-components' TeeKeyAlgorithm serde names).
type KeyAlgorithm string

const (
	KeyECP256  KeyAlgorithm = "ECDH-ES+A256KW-P256" // default
	KeyECP521  KeyAlgorithm = "ECDH-ES+A256KW-P521"
	KeyRSAOAEP KeyAlgorithm = "RSA-OAEP-256"
)

// Endpoint is one KBS: its base URL (resources are at URL/kbs/v0/...) and,
// for https, the PEM certificate(s) to pin.
type Endpoint struct {
	URL string
	// CertPEM, when set, is the only trust anchor for https: the system
	// roots are not consulted. Empty means the system roots (an owner who
	// wants pinning sets the cert).
	CertPEM string
	// Source names the file and table the endpoint came from, for errors.
	Source string

	pool *x509.CertPool
}

// Config is where the guest attests and fetches resources.
type Config struct {
	// Attest is the KBS the guest runs RCAR with: aa.toml
	// [token_configs.kbs] (what the attestation agent uses), else cdh.toml
	// [kbc].
	Attest *Endpoint
	// Resource is the KBS resources come from: cdh.toml [kbc] (what CDH's
	// cc_kbc uses), else aa.toml. Nil when cdh.toml selects offline_fs_kbc
	// and NoResource says why.
	Resource   *Endpoint
	NoResource error
	Key        KeyAlgorithm
}

type aaFile struct {
	TokenConfigs struct {
		KBS *struct {
			URL             *string `toml:"url"`
			Cert            string  `toml:"cert"`
			TeeKeyAlgorithm string  `toml:"tee_key_algorithm"`
		} `toml:"kbs"`
	} `toml:"token_configs"`
}

type cdhFile struct {
	KBC *struct {
		Name    *string `toml:"name"`
		URL     string  `toml:"url"` // CDH defaults kbc.url to ""
		KBSCert string  `toml:"kbs_cert"`
	} `toml:"kbc"`
}

// ParseAA reads aa.toml. It returns a nil endpoint when the file has no
// [token_configs.kbs] table (an AA configured for another token type).
// Unknown keys are ignored, as the attestation agent does.
func ParseAA(text []byte) (*Endpoint, KeyAlgorithm, error) {
	var f aaFile
	if _, err := toml.Decode(string(text), &f); err != nil {
		return nil, "", &ConfigError{File: AAFile, Msg: "is not valid TOML (fix the aa.toml entry of the pod's init-data)", Err: err}
	}
	k := f.TokenConfigs.KBS
	if k == nil {
		return nil, KeyECP256, nil
	}
	key, err := keyAlgorithm(k.TeeKeyAlgorithm)
	if err != nil {
		return nil, "", err
	}
	if k.URL == nil || strings.TrimSpace(*k.URL) == "" {
		return nil, "", &ConfigError{File: AAFile, Field: "token_configs.kbs.url", Err: ErrNoKBS,
			Msg: `no KBS configured: [token_configs.kbs] has no url; set url = "https://<kbs-host>:8080"`}
	}
	ep, err := endpoint(AAFile, "token_configs.kbs", *k.URL, "cert", k.Cert)
	return ep, key, err
}

// ParseCDH reads cdh.toml. name = "offline_fs_kbc" (resources in guest
// files) is a nil endpoint with an ErrNoKBS error; unknown keys are ignored,
// as CDH does.
func ParseCDH(text []byte) (*Endpoint, error) {
	var f cdhFile
	if _, err := toml.Decode(string(text), &f); err != nil {
		return nil, &ConfigError{File: CDHFile, Msg: "is not valid TOML (fix the cdh.toml entry of the pod's init-data)", Err: err}
	}
	if f.KBC == nil {
		return nil, &ConfigError{File: CDHFile, Field: "kbc",
			Msg: `has no [kbc] table, which CDH requires; add [kbc] with name = "cc_kbc" and url = "https://<kbs-host>:8080"`}
	}
	if f.KBC.Name == nil {
		return nil, &ConfigError{File: CDHFile, Field: "kbc.name", Msg: `is missing; set name = "cc_kbc"`}
	}
	switch name := *f.KBC.Name; name {
	case "cc_kbc":
	case "offline_fs_kbc":
		return nil, &ConfigError{File: CDHFile, Field: "kbc.name", Err: ErrNoKBS,
			Msg: `no KBS configured: name is "offline_fs_kbc" (resources from guest files, which this guest does not have); set name = "cc_kbc" and url = "https://<kbs-host>:8080"`}
	default:
		return nil, &ConfigError{File: CDHFile, Field: "kbc.name",
			Msg: fmt.Sprintf(`is %q; this guest supports "cc_kbc" (and "offline_fs_kbc" meaning no KBS)`, clip(name, 64))}
	}
	if strings.TrimSpace(f.KBC.URL) == "" {
		return nil, &ConfigError{File: CDHFile, Field: "kbc.url", Err: ErrNoKBS,
			Msg: `no KBS configured: name is "cc_kbc" but url is empty; set url = "https://<kbs-host>:8080"`}
	}
	return endpoint(CDHFile, "kbc", f.KBC.URL, "kbs_cert", f.KBC.KBSCert)
}

// LoadConfig combines the owner's aa.toml and cdh.toml (nil: the init-data
// has no such entry). Either file alone is enough; with neither, or with
// neither naming a KBS, the error wraps ErrNoKBS.
func LoadConfig(aaTOML, cdhTOML []byte) (*Config, error) {
	c := &Config{Key: KeyECP256}
	var noAA, noCDH error
	if aaTOML != nil {
		ep, key, err := ParseAA(aaTOML)
		switch {
		case errors.Is(err, ErrNoKBS):
			noAA = err
		case err != nil:
			return nil, err
		default:
			c.Attest, c.Key = ep, key
		}
	}
	if cdhTOML != nil {
		ep, err := ParseCDH(cdhTOML)
		switch {
		case errors.Is(err, ErrNoKBS):
			noCDH = err
		case err != nil:
			return nil, err
		default:
			c.Resource = ep
		}
	}
	switch {
	case c.Attest == nil && c.Resource == nil:
		if noCDH != nil {
			return nil, noCDH
		}
		if noAA != nil {
			return nil, noAA
		}
		return nil, &ConfigError{File: AAFile + " / " + CDHFile, Err: ErrNoKBS,
			Msg: `no KBS configured: the init-data has neither entry with a KBS url; add "aa.toml" with [token_configs.kbs] url = "https://<kbs-host>:8080"`}
	case c.Attest == nil:
		c.Attest = c.Resource
	case c.Resource == nil && noCDH != nil:
		// The owner chose offline_fs_kbc for resources: honour it rather
		// than fetching them from the attestation KBS anyway.
		c.NoResource = noCDH
	case c.Resource == nil:
		c.Resource = c.Attest
	}
	return c, nil
}

func keyAlgorithm(s string) (KeyAlgorithm, error) {
	switch k := KeyAlgorithm(s); k {
	case "":
		return KeyECP256, nil
	case KeyECP256, KeyECP521, KeyRSAOAEP:
		return k, nil
	}
	return "", &ConfigError{File: AAFile, Field: "token_configs.kbs.tee_key_algorithm",
		Msg: fmt.Sprintf("is %q; use %q (default), %q or %q", clip(s, 64), KeyECP256, KeyECP521, KeyRSAOAEP)}
}

func endpoint(file, table, rawURL, certField, certPEM string) (*Endpoint, error) {
	u, err := url.Parse(strings.TrimSpace(rawURL))
	field := table + ".url"
	if err != nil {
		return nil, &ConfigError{File: file, Field: field, Msg: "is not a URL; write it as https://<kbs-host>:8080", Err: err}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, &ConfigError{File: file, Field: field, Msg: fmt.Sprintf("has scheme %q; use https:// (or http:// for a test KBS)", u.Scheme)}
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, &ConfigError{File: file, Field: field, Msg: "must be scheme://host[:port][/path] with no user, query or fragment"}
	}
	ep := &Endpoint{URL: strings.TrimRight(u.String(), "/"), Source: file + " [" + table + "]"}
	// guest-components writes kbs_cert = "" in its own examples: empty
	// means no cert, not a broken one.
	if strings.TrimSpace(certPEM) == "" {
		return ep, nil
	}
	pool, err := certPool(certPEM)
	if err != nil {
		return nil, &ConfigError{File: file, Field: table + "." + certField,
			Msg: "is not a PEM certificate; paste the KBS's HTTPS certificate (-----BEGIN CERTIFICATE-----...)", Err: err}
	}
	ep.CertPEM, ep.pool = certPEM, pool
	return ep, nil
}

// certPool holds exactly the certificates in certPEM: a pinned KBS is
// trusted through them alone.
func certPool(certPEM string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	rest := []byte(certPEM)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no CERTIFICATE block found")
	}
	return pool, nil
}
