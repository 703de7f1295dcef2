package attest

import (
	"errors"
	"strings"
	"testing"
)

func TestLoadConfig(t *testing.T) {
	aa := []byte("[token_configs]\n[token_configs.kbs]\nurl = \"http://kbs:8080/\"\nunknown = 1\n[eventlog_config]\ninit_pcr = 17\n")
	cdh := []byte("socket = \"x\"\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://res:8080\"\nkbs_cert = \"\"\n[image]\nwork_dir = \"/x\"\n")
	c, err := LoadConfig(aa, cdh)
	if err != nil {
		t.Fatal(err)
	}
	if c.Attest.URL != "http://kbs:8080" || c.Resource.URL != "http://res:8080" || c.Key != KeyECP256 {
		t.Fatalf("got attest %+v resource %+v key %s", c.Attest, c.Resource, c.Key)
	}
	// Either file alone serves both roles.
	if c, err = LoadConfig(nil, cdh); err != nil || c.Attest != c.Resource || c.Attest.URL != "http://res:8080" {
		t.Fatalf("cdh only: %+v, %v", c, err)
	}
	if c, err = LoadConfig(aa, nil); err != nil || c.Attest != c.Resource {
		t.Fatalf("aa only: %+v, %v", c, err)
	}
	// offline_fs_kbc in cdh.toml: attestation still works, resources say why not.
	c, err = LoadConfig(aa, []byte("[kbc]\nname = \"offline_fs_kbc\"\n"))
	if err != nil || c.Resource != nil || !errors.Is(c.NoResource, ErrNoKBS) {
		t.Fatalf("offline: %+v, %v", c, err)
	}
	if c, err = LoadConfig([]byte("[token_configs.kbs]\nurl = \"https://k\"\ntee_key_algorithm = \"RSA-OAEP-256\"\n"), nil); err != nil || c.Key != KeyRSAOAEP {
		t.Fatalf("rsa: %+v, %v", c, err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		aa, cdh  string // "-" = absent
		noKBS    bool
		wantText []string
	}{
		{"nothing", "-", "-", true, []string{"no KBS configured", "aa.toml"}},
		{"offline only", "-", "[kbc]\nname = \"offline_fs_kbc\"\nurl = \"\"\n", true, []string{"cdh.toml kbc.name", "offline_fs_kbc", `set name = "cc_kbc"`}},
		{"aa without url", "[token_configs.kbs]\ncert = \"\"\n", "-", true, []string{"aa.toml token_configs.kbs.url", "no KBS configured"}},
		{"aa for coco_as only", "[token_configs.coco_as]\nurl = \"http://as\"\n", "-", true, []string{"no KBS configured"}},
		{"cc_kbc empty url", "-", "[kbc]\nname = \"cc_kbc\"\n", true, []string{"cdh.toml kbc.url", "url is empty"}},
		{"bad toml", "[token_configs.kbs\n", "-", false, []string{"aa.toml", "not valid TOML"}},
		{"no kbc table", "-", "socket = \"x\"\n", false, []string{"cdh.toml kbc", "[kbc]"}},
		{"no kbc name", "-", "[kbc]\nurl = \"http://k\"\n", false, []string{"cdh.toml kbc.name", "missing"}},
		{"unknown kbc", "-", "[kbc]\nname = \"sample_kbc\"\nurl = \"http://k\"\n", false, []string{"kbc.name", "sample_kbc", "cc_kbc"}},
		{"ftp url", "[token_configs.kbs]\nurl = \"ftp://k\"\n", "-", false, []string{"token_configs.kbs.url", "scheme \"ftp\""}},
		{"url with query", "-", "[kbc]\nname = \"cc_kbc\"\nurl = \"http://k/?a=b\"\n", false, []string{"kbc.url", "query"}},
		{"bad cert", "[token_configs.kbs]\nurl = \"https://k\"\ncert = \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"\n", "-", false, []string{"token_configs.kbs.cert", "PEM certificate"}},
		{"no pem", "-", "[kbc]\nname = \"cc_kbc\"\nurl = \"https://k\"\nkbs_cert = \"hello\"\n", false, []string{"kbc.kbs_cert", "no CERTIFICATE block"}},
		{"bad key alg", "[token_configs.kbs]\nurl = \"https://k\"\ntee_key_algorithm = \"RSA1_5\"\n", "-", false, []string{"tee_key_algorithm", "RSA1_5"}},
	} {
		var aa, cdh []byte
		if tc.aa != "-" {
			aa = []byte(tc.aa)
		}
		if tc.cdh != "-" {
			cdh = []byte(tc.cdh)
		}
		_, err := LoadConfig(aa, cdh)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: got %v, want a *ConfigError", tc.name, err)
			continue
		}
		if errors.Is(err, ErrNoKBS) != tc.noKBS {
			t.Errorf("%s: errors.Is(ErrNoKBS) = %v: %v", tc.name, !tc.noKBS, err)
		}
		for _, w := range tc.wantText {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.name, err, w)
			}
		}
	}
}

func TestParseResource(t *testing.T) {
	for in, want := range map[string]string{
		"kbs:///default/key/1":                     "default/key/1",
		"kbs://ignored.example:9/a/b/c":            "a/b/c", // host ignored, as upstream
		"default/sealed-secret/test":               "default/sealed-secret/test",
		"kbs:///Repo_1/t-y.p+e/tag=@~":             "Repo_1/t-y.p+e/tag=@~",
		"kbs:///default/signing-key/sealed-secret": "default/signing-key/sealed-secret",
	} {
		p, err := ParseResource(in)
		if err != nil || p.String() != want {
			t.Errorf("%q: got %q, %v; want %q", in, p, err, want)
		}
	}
	for _, in := range []string{
		"", "kbs://", "kbs:///", "kbs:///a/b", "kbs:///a/b/c/d", "a//c", "/a/b/c", "a/b/c/",
		"kbs:///../b/c", "kbs:///a/./c", "kbs:///a/b/..", "a/b/c%2f", "a/b/c?x=1", "a/b/c#f",
		"a/b\\c/d", "a/b/c d", "a/b/\x00", "a/b/é", "kbs+pkcs11:///a/b/c", "http://kbs/a/b/c",
		"file:///etc/passwd", "a/b/" + strings.Repeat("x", 200),
	} {
		if p, err := ParseResource(in); err == nil {
			t.Errorf("%q: accepted as %q", in, p)
		}
	}
}
