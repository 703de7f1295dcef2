package tee

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestParseKind(t *testing.T) {
	for _, k := range Kinds() {
		got, err := ParseKind(string(k))
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %q, %v", k, got, err)
		}
	}
	if k, err := ParseKind(""); err != nil || k != None {
		t.Errorf(`ParseKind("") = %q, %v; want none`, k, err)
	}
	if _, err := ParseKind("cca"); err == nil || !strings.Contains(err.Error(), `"cca"`) || !strings.Contains(err.Error(), `"snp"`) {
		t.Errorf("unknown kind error should name it and the choices: %v", err)
	}
}

func TestDefaultsValidate(t *testing.T) {
	for _, k := range Kinds() {
		c := Config{Kind: k}.WithDefaults()
		if err := c.Validate(); err != nil {
			t.Errorf("%s defaults do not validate: %v", k, err)
		}
	}
	if p := (Config{Kind: SEVES}).WithDefaults().SEV.Policy; p&SEVPolicyES == 0 {
		t.Errorf("sev-es default policy %#x lacks the ES bit", p)
	}
	if p := (Config{Kind: SNP}).WithDefaults().SNP.Policy; p != 0x30000 {
		t.Errorf("snp default policy %#x, want 0x30000", p)
	}
	if !(Config{Kind: TDX}).WithDefaults().TDX.SeptVEDisable {
		t.Error("tdx default should disable SEPT #VE")
	}
	set := &SNPOptions{Policy: 0x70000, CBitPos: 47, ReducedPhysBits: 5}
	if got := (Config{Kind: SNP, SNP: set}).WithDefaults().SNP; got != set {
		t.Error("WithDefaults replaced options that were set")
	}
}

func TestValidateErrors(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	snp := func(f func(*SNPOptions)) Config {
		c := Config{Kind: SNP}.WithDefaults()
		o := *c.SNP
		f(&o)
		c.SNP = &o
		return c
	}
	cases := []struct {
		c    Config
		want string
	}{
		{Config{Kind: "x"}, "tee.kind"},
		{Config{Kind: SNP, SNP: &SNPOptions{Policy: 0x30000, CBitPos: 51, ReducedPhysBits: 1}, TDX: &TDXOptions{}}, `options for "tdx" are set`},
		{Config{Kind: SNP}, "tee.snp: options missing"},
		{Config{Kind: SEV, SEV: &SEVOptions{Policy: 0x5, CBitPos: 47, ReducedPhysBits: 1}}, `use tee.kind "sev-es"`},
		{Config{Kind: SEVES, SEV: &SEVOptions{Policy: 0x1, CBitPos: 47, ReducedPhysBits: 1}}, "lacks bit 2"},
		{Config{Kind: SEV, SEV: &SEVOptions{Policy: 0x1, CBitPos: 0, ReducedPhysBits: 1}}, "tee.sev.cbitpos: 0 is out of range"},
		{Config{Kind: SEV, SEV: &SEVOptions{Policy: 0x1, CBitPos: 47}}, "tee.sev.reduced_phys_bits: 0 is out of range"},
		{snp(func(o *SNPOptions) { o.Policy = 0x10000 }), "bit 17"},
		{snp(func(o *SNPOptions) { o.IDBlock, o.IDAuth = b64(95), b64(10) }), "exactly 96"},
		{snp(func(o *SNPOptions) { o.IDBlock = "!!" }), "tee.snp.id_block: must be base64"},
		{snp(func(o *SNPOptions) { o.IDBlock = b64(96) }), "tee.snp.id_auth: empty; an id_block needs"},
		{snp(func(o *SNPOptions) { o.IDAuth = b64(10) }), "set without id_block"},
		{snp(func(o *SNPOptions) { o.IDBlock, o.IDAuth = b64(96), b64(4097) }), "at most 4096"},
		{snp(func(o *SNPOptions) { o.AuthorKeyEnabled = true }), "needs tee.snp.id_auth"},
		{snp(func(o *SNPOptions) { o.KernelHashes = false }), "tee.snp.kernel_hashes: false"},
		{Config{Kind: SEVES, SEV: &SEVOptions{Policy: 0x5, CBitPos: 47, ReducedPhysBits: 1}}, "tee.sev.kernel_hashes: false"},
		{Config{Kind: TDX, TDX: &TDXOptions{QuoteGenerationSocket: "vsock:2"}}, `want "vsock:CID:PORT"`},
		{Config{Kind: TDX, TDX: &TDXOptions{QuoteGenerationSocket: "vsock:x:1"}}, `"x" is not a 32-bit number`},
		{Config{Kind: TDX, TDX: &TDXOptions{QuoteGenerationSocket: "qgs.sock"}}, "absolute unix socket path"},
	}
	for _, tc := range cases {
		err := errors.Join(tc.c.Validate(), tc.c.CheckKernelHashes())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: want error with %q, got %v", tc.c, tc.want, err)
		}
	}
}

func TestQuoteSocket(t *testing.T) {
	got, err := (&TDXOptions{QuoteGenerationSocket: "vsock:2:4050"}).QuoteSocket()
	if err != nil || got["type"] != "vsock" || got["cid"] != "2" || got["port"] != "4050" {
		t.Errorf("vsock form = %v, %v", got, err)
	}
	got, err = (&TDXOptions{QuoteGenerationSocket: "/run/tdx-qgs/qgs.socket"}).QuoteSocket()
	if err != nil || got["type"] != "unix" || got["path"] != "/run/tdx-qgs/qgs.socket" {
		t.Errorf("unix form = %v, %v", got, err)
	}
	if got, err := (&TDXOptions{}).QuoteSocket(); got != nil || err != nil {
		t.Errorf("unset = %v, %v", got, err)
	}
}

func TestLaunchDataSize(t *testing.T) {
	want := map[Kind]int{None: 0, SEV: 0, SEVES: 0, SNP: 32, TDX: 48, SE: 0, PEF: 0}
	for k, n := range want {
		if got := k.LaunchDataSize(); got != n {
			t.Errorf("%s: %d, want %d", k, got, n)
		}
	}
}
