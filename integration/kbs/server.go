// Package kbs is a strict, in-process Key Broker Service for the integration
// tests: the Trustee KBS protocol (RCAR: auth, attest, resource) as Trustee's
// kbs serves it at /kbs/v0, with only the "sample" verifier.
//
// It is written from the protocol description (Trustee kbs/src, kbs-types),
// not from our guest client, so the two can catch each other's mistakes.
// Where Trustee's behaviour is surprising (every failure but an unknown
// plugin is a 401, a missing resource included) this server does the same,
// because a guest client that copes with this server should cope with the
// real one.
package kbs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Trustee's error types (kbs/src/error.rs: the variant name after this prefix).
const (
	ErrAttestation      = "AttestationError"
	ErrPolicyDeny       = "PolicyDeny"
	ErrTokenNotFound    = "TokenNotFound"
	ErrTokenVerifier    = "TokenVerifierError"
	ErrPluginNotFound   = "PluginNotFound"
	ErrPluginInternal   = "PluginInternalError"
	ErrJwe              = "JweError"
	ErrAdminAuthAccess  = "AdminAuthAccess"
	ErrorTypePrefix     = "https://github.com/confidential-containers/kbs/errors/"
	ProtocolVersion     = "0.4.0"
	SessionCookie       = "kbs-session-id"
	defaultSessionLife  = 5 * time.Minute
	defaultTokenLife    = 5 * time.Minute
	maxRequestBodyBytes = 4 << 20
)

// Options configures a Server. The zero value is a plain-HTTP server with
// Trustee's default lifetimes, no resources, no init-data check and a policy
// that allows everything.
type Options struct {
	// SessionTimeout is how long an auth session (and its cookie) lives.
	// Default 5 minutes (Trustee attestation/config.rs DEFAULT_TIMEOUT).
	SessionTimeout time.Duration
	// TokenLifetime is the attestation token's exp - iat. Default 5 minutes
	// (Trustee's EAR broker duration_min).
	TokenLifetime time.Duration
	// Now replaces the clock, so tests can expire sessions and tokens
	// without sleeping.
	Now func() time.Time
	// TLS makes Serve speak HTTPS with a self-signed certificate the server
	// generates for TLSHosts (default "localhost", "127.0.0.1", "::1").
	TLS      bool
	TLSHosts []string
	// Logf, if set, gets one line per request and per refusal.
	Logf func(format string, args ...any)
}

// ResourcePolicy decides whether an attested caller may read a resource.
// path is "<repo>/<type>/<tag>"; claims are the verified token's claims.
// A non-nil error denies (401 PolicyDeny) and its text is recorded as the
// refusal reason.
type ResourcePolicy func(path string, claims map[string]any) error

// Refusal is one request the server turned down, for tests to assert on.
type Refusal struct {
	Endpoint string // "auth", "attest", "resource" or the plugin name
	Status   int
	Type     string // e.g. "AttestationError", without the URL prefix
	Reason   string // the detail sent to the client
	Time     time.Time
}

// Server is the test KBS. It is an http.Handler; Serve runs it on a listener.
type Server struct {
	opts    Options
	signKey *ecdsa.PrivateKey // signs the attestation tokens
	tlsCert *tls.Certificate
	certPEM []byte

	mu        sync.Mutex
	sessions  map[string]*session
	resources map[string][]byte
	initData  InitDataReference
	policy    ResourcePolicy
	requests  map[string]int
	refusals  []Refusal
	served    []string
	httpSrv   *http.Server
}

// New builds a server with a fresh token-signing key (and TLS certificate if
// asked for). It panics only if the system's randomness fails.
func New(opts Options) *Server {
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = defaultSessionLife
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = defaultTokenLife
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("kbs: generate token key: %v", err))
	}
	s := &Server{
		opts:      opts,
		signKey:   key,
		sessions:  map[string]*session{},
		resources: map[string][]byte{},
		requests:  map[string]int{},
	}
	if opts.TLS {
		if err := s.makeCert(); err != nil {
			panic(fmt.Sprintf("kbs: self-signed certificate: %v", err))
		}
	}
	return s
}

// SetResource stores (or replaces) a resource at "<repo>/<type>/<tag>".
// It panics on a path Trustee would not accept, since that is a bug in the
// test, not a condition to handle.
func (s *Server) SetResource(path string, data []byte) {
	if err := checkResourcePath(path); err != nil {
		panic("kbs: SetResource: " + err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resources[path] = append([]byte(nil), data...)
}

// DeleteResource removes a resource; later reads fail as missing.
func (s *Server) DeleteResource(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.resources, path)
}

// SetInitDataReference sets what /attest requires of the init-data.
func (s *Server) SetInitDataReference(ref InitDataReference) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initData = ref
}

// SetResourcePolicy replaces the resource policy; nil allows everything.
func (s *Server) SetResourcePolicy(p ResourcePolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy = p
}

// TokenPublicKey is the key the attestation tokens are signed with.
func (s *Server) TokenPublicKey() *ecdsa.PublicKey { return &s.signKey.PublicKey }

// Requests returns how many requests reached each endpoint ("auth",
// "attest", "resource", or the unknown plugin's name).
func (s *Server) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

// Refusals returns every refusal so far, oldest first.
func (s *Server) Refusals() []Refusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Refusal(nil), s.refusals...)
}

// RefusedWith reports whether some refusal had this error type and a
// reason containing substr ("" matches any reason).
func (s *Server) RefusedWith(errType, substr string) bool {
	for _, r := range s.Refusals() {
		if r.Type == errType && strings.Contains(r.Reason, substr) {
			return true
		}
	}
	return false
}

// Served lists the resource paths handed out, in order.
func (s *Server) Served() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.served...)
}

// Serve answers on l until Close; with Options.TLS it wraps l in TLS.
func (s *Server) Serve(l net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	s.mu.Lock()
	s.httpSrv = srv
	s.mu.Unlock()
	if cfg := s.TLSConfig(); cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	err := srv.Serve(l)
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}

// Close stops Serve.
func (s *Server) Close() error {
	s.mu.Lock()
	srv := s.httpSrv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

const apiPrefix = "/kbs/v0/"

// ServeHTTP routes the way Trustee's single "{plugin}/{rest...}" route does:
// auth and attest only as POST; anything else that is not the resource
// plugin is PluginNotFound (404), including GET /kbs/v0/auth.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, apiPrefix) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.NotFound(w, r)
		return
	}
	plugin, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, apiPrefix), "/")
	s.count(plugin)
	s.logf("kbs: %s %s", r.Method, r.URL.Path)
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBodyBytes)
	switch {
	case plugin == "auth" && r.Method == http.MethodPost:
		s.handleAuth(w, r)
	case plugin == "attest" && r.Method == http.MethodPost:
		s.handleAttest(w, r)
	case plugin == "resource":
		s.handleResource(w, r, rest)
	default:
		s.fail(w, plugin, http.StatusNotFound, ErrPluginNotFound, fmt.Sprintf("Plugin %s not found", plugin))
	}
}

func (s *Server) count(endpoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[endpoint]++
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// fail writes Trustee's ErrorInformation body and records the refusal.
func (s *Server) fail(w http.ResponseWriter, endpoint string, status int, errType, detail string) {
	s.mu.Lock()
	s.refusals = append(s.refusals, Refusal{Endpoint: endpoint, Status: status, Type: errType, Reason: detail, Time: s.opts.Now()})
	s.mu.Unlock()
	s.logf("kbs: refused %s: %d %s: %s", endpoint, status, errType, detail)
	// kbs-types ErrorInformation member order: type, then detail.
	body, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Detail string `json:"detail"`
	}{ErrorTypePrefix + errType, detail})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
