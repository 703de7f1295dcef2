// Command test-kbs serves the integration tests' strict Key Broker Service
// (package integration/kbs: Trustee's RCAR protocol, sample evidence only)
// as a process of its own, so it can run inside a network namespace, or by
// hand to try the runtime:
//
//	test-kbs -addr 10.0.2.2:8080 -resource default/key/1=./key.bin -initdata ./initdata.toml
//
// It prints "test-kbs: listening on <url>" once it accepts connections and
// logs every request and refusal to stderr.
package main

import (
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/coco-runtime/coco/integration/kbs"
)

// pairs collects repeatable "path=value" flags.
type pairs []string

func (p *pairs) String() string     { return strings.Join(*p, ",") }
func (p *pairs) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	var resources, resourcesB64, deny pairs
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	useTLS := flag.Bool("tls", false, "serve HTTPS with a generated self-signed certificate")
	tlsHosts := flag.String("tls-hosts", "", "comma-separated DNS names/IPs for the certificate (default localhost,127.0.0.1,::1)")
	certOut := flag.String("cert-out", "", "write the certificate PEM here (with -tls), for the client to pin")
	initFile := flag.String("initdata", "", "require init-data with the same digest as this TOML file")
	initDigest := flag.String("initdata-digest", "", "require init-data with this digest (hex)")
	noInit := flag.Bool("no-initdata", false, "refuse attestations that carry init-data")
	sessionTimeout := flag.Duration("session-timeout", 0, "auth session lifetime (default 5m)")
	tokenLifetime := flag.Duration("token-lifetime", 0, "attestation token lifetime (default 5m)")
	flag.Var(&resources, "resource", "repo/type/tag=FILE: serve FILE's bytes at that path (repeatable)")
	flag.Var(&resourcesB64, "resource-b64", "repo/type/tag=BASE64: serve the decoded bytes (repeatable)")
	flag.Var(&deny, "deny", "repo/type/tag: refuse this resource with PolicyDeny (repeatable)")
	flag.Parse()
	if err := run(*addr, *useTLS, *tlsHosts, *certOut, *initFile, *initDigest, *noInit, resources, resourcesB64, deny,
		kbs.Options{SessionTimeout: *sessionTimeout, TokenLifetime: *tokenLifetime}); err != nil {
		fmt.Fprintln(os.Stderr, "test-kbs:", err)
		os.Exit(1)
	}
}

func run(addr string, useTLS bool, tlsHosts, certOut, initFile, initDigest string, noInit bool,
	resources, resourcesB64, deny pairs, opts kbs.Options) error {
	opts.TLS = useTLS
	if tlsHosts != "" {
		opts.TLSHosts = strings.Split(tlsHosts, ",")
	}
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	opts.Logf = logger.Printf
	s := kbs.New(opts)

	set := func(spec string, decode func(string) ([]byte, error)) error {
		path, val, ok := strings.Cut(spec, "=")
		if !ok {
			return fmt.Errorf("resource %q: want repo/type/tag=value", spec)
		}
		data, err := decode(val)
		if err != nil {
			return fmt.Errorf("resource %s: %w", path, err)
		}
		if strings.Count(path, "/") != 2 {
			return fmt.Errorf("resource %q: want repo/type/tag", path)
		}
		s.SetResource(path, data)
		return nil
	}
	for _, r := range resources {
		if err := set(r, os.ReadFile); err != nil {
			return err
		}
	}
	for _, r := range resourcesB64 {
		if err := set(r, base64.StdEncoding.DecodeString); err != nil {
			return err
		}
	}
	if len(deny) > 0 {
		denied := map[string]bool{}
		for _, d := range deny {
			denied[d] = true
		}
		s.SetResourcePolicy(func(path string, _ map[string]any) error {
			if denied[path] {
				return fmt.Errorf("%s is denied by -deny", path)
			}
			return nil
		})
	}
	switch {
	case noInit && (initFile != "" || initDigest != ""):
		return fmt.Errorf("-no-initdata contradicts -initdata/-initdata-digest")
	case noInit:
		s.SetInitDataReference(kbs.ExpectNoInitData())
	case initFile != "":
		text, err := os.ReadFile(initFile)
		if err != nil {
			return err
		}
		ref, err := kbs.ExpectInitData(text)
		if err != nil {
			return fmt.Errorf("%s: %w", initFile, err)
		}
		s.SetInitDataReference(ref)
	case initDigest != "":
		d, err := hex.DecodeString(initDigest)
		if err != nil {
			return fmt.Errorf("-initdata-digest: %w", err)
		}
		s.SetInitDataReference(kbs.ExpectInitDataDigest(d))
	}
	if certOut != "" {
		if !useTLS {
			return fmt.Errorf("-cert-out needs -tls")
		}
		if err := os.WriteFile(certOut, s.CertPEM(), 0o644); err != nil {
			return err
		}
	}

	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	fmt.Printf("test-kbs: listening on %s://%s\n", scheme, l.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		_ = s.Close()
	}()
	return s.Serve(l)
}
