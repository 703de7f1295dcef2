// Package cdh is the pod's confidential data hub: what the containers of a
// pod may ask the guest for, on the guest's loopback only. It serves the
// REST paths CoCo workloads already call (guest-components'
// api-server-rest, http://127.0.0.1:8006):
//
//	/cdh/resource/<repo>/<type>/<tag>   a secret from the Key Broker Service
//	/aa/token?token_type=kbs            the KBS attestation token
//	/aa/evidence?runtime_data=<data>    this TEE's evidence over runtime data
//	/info                               what the hub offers
//
// and unseals sealed secrets ("sealed.<jws>") in container environments
// and files. Every request is put to the owner's agent policy first
// (rules GetResourceRequest, GetTokenRequest, GetEvidenceRequest); the KBS
// then decides what this TEE may have. Containers share the VM's network
// namespace, so every container of the pod reaches the hub and nothing
// outside the guest does: the listener is bound to 127.0.0.1 and a caller
// from any other address is refused.
package cdh

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Addr is where the hub listens: the loopback address and port CoCo
// workloads use.
const Addr = "127.0.0.1:8006"

// Broker is what the hub asks of the guest's attestation client.
type Broker interface {
	// Resource returns a KBS resource, path "<repo>/<type>/<tag>".
	Resource(ctx context.Context, path string) ([]byte, error)
	// Token returns the KBS attestation token as JSON ({"token": ...}).
	Token(ctx context.Context) ([]byte, error)
	// Evidence returns this TEE's evidence binding runtimeData.
	Evidence(ctx context.Context, runtimeData []byte) ([]byte, error)
	// Unseal returns a sealed secret's plaintext.
	Unseal(ctx context.Context, sealed string) ([]byte, error)
	// Tee names the evidence this guest produces ("snp", "tdx", "sample").
	Tee() string
}

// Judge asks the agent policy in force about one workload request; a
// refusal is an errdefs.ErrPermissionDenied naming the rule.
type Judge func(ctx context.Context, req proto.Message) error

// Hub serves the workload API.
type Hub struct {
	// broker waits for the owner's init-data and returns the attestation
	// client it configures, or why there is none (no KBS in cdh.toml).
	broker  func(ctx context.Context) (Broker, error)
	judge   Judge
	version string
	timeout time.Duration
}

// RequestTimeout bounds one workload request, KBS round trips included:
// the attestation client retries a KBS that does not answer within it.
const RequestTimeout = 60 * time.Second

// New returns a hub. broker is called for each request and must return
// quickly once the owner's init-data is loaded.
func New(broker func(ctx context.Context) (Broker, error), judge Judge, version string) *Hub {
	return &Hub{broker: broker, judge: judge, version: version, timeout: RequestTimeout}
}

// Serve answers on l until ctx ends.
func (h *Hub) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// maxRuntimeData bounds /aa/evidence's runtime_data: it goes into the
// report's 64-byte report-data field as given.
const maxRuntimeData = 64

func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !fromLoopback(r.RemoteAddr) {
		http.Error(w, "Forbidden", http.StatusForbidden)
		return
	}
	// Not the connection's context: net/http cancels that when the client
	// half-closes, which simple clients (printf | nc) do right after the
	// request. The work is bounded by the timeout instead.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.timeout)
	defer cancel()
	p := r.URL.Path
	switch {
	case p == "/info":
		h.info(ctx, w, r)
	case strings.HasPrefix(p, "/cdh/resource/"):
		h.resource(ctx, w, strings.TrimPrefix(p, "/cdh/resource/"))
	case p == "/aa/token":
		h.token(ctx, w, r)
	case p == "/aa/evidence":
		h.evidence(ctx, w, r)
	default:
		http.Error(w, "URL NOT FOUND: the hub serves /cdh/resource/<repo>/<type>/<tag>, /aa/token, /aa/evidence and /info", http.StatusNotFound)
	}
}

func (h *Hub) info(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	out := map[string]string{"version": h.version, "feature": "all"}
	if b, err := h.broker(ctx); err == nil {
		out["tee"] = b.Tee()
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (h *Hub) resource(ctx context.Context, w http.ResponseWriter, path string) {
	if err := ValidateResourcePath(path); err != nil {
		fail(ctx, w, "resource", err)
		return
	}
	b, err := h.allowed(ctx, &api.GetResourceRequest{Path: path})
	if err != nil {
		fail(ctx, w, "resource "+path, err)
		return
	}
	data, err := b.Resource(ctx, path)
	if err != nil {
		fail(ctx, w, "resource "+path, err)
		return
	}
	log.G(ctx).Infof("workload API: resource %s released (%d bytes)", path, len(data))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(data)
}

func (h *Hub) token(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	tt := r.URL.Query().Get("token_type")
	if tt == "" {
		http.Error(w, "BAD REQUEST: token_type is missing; ask for token_type=kbs", http.StatusBadRequest)
		return
	}
	if tt != "kbs" {
		http.Error(w, fmt.Sprintf("BAD REQUEST: token_type %q is not supported; ask for token_type=kbs", tt), http.StatusBadRequest)
		return
	}
	b, err := h.allowed(ctx, &api.GetTokenRequest{TokenType: tt})
	if err != nil {
		fail(ctx, w, "token", err)
		return
	}
	tok, err := b.Token(ctx)
	if err != nil {
		fail(ctx, w, "token", err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(tok)
}

func (h *Hub) evidence(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	raw, ok := q["runtime_data"]
	if !ok || len(raw) != 1 {
		http.Error(w, "BAD REQUEST: runtime_data must be given once", http.StatusBadRequest)
		return
	}
	data := []byte(raw[0])
	switch enc := q.Get("encoding"); enc {
	case "":
	case "base64":
		d, err := base64.RawURLEncoding.DecodeString(raw[0])
		if err != nil {
			http.Error(w, "BAD REQUEST: runtime_data is not URL-safe base64 without padding (encoding=base64)", http.StatusBadRequest)
			return
		}
		data = d
	default:
		http.Error(w, fmt.Sprintf("BAD REQUEST: encoding %q: want base64 or none", enc), http.StatusBadRequest)
		return
	}
	if len(data) > maxRuntimeData {
		http.Error(w, fmt.Sprintf("BAD REQUEST: runtime_data is %d bytes, at most %d", len(data), maxRuntimeData), http.StatusBadRequest)
		return
	}
	b, err := h.allowed(ctx, &api.GetEvidenceRequest{RuntimeData: data})
	if err != nil {
		fail(ctx, w, "evidence", err)
		return
	}
	ev, err := b.Evidence(ctx, data)
	if err != nil {
		fail(ctx, w, "evidence", err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(ev)
}

// allowed asks the policy, then returns the broker: a denied request never
// waits for (or reaches) the KBS.
func (h *Hub) allowed(ctx context.Context, req proto.Message) (Broker, error) {
	if err := h.judge(ctx, req); err != nil {
		return nil, err
	}
	return h.broker(ctx)
}

// fail answers with the error's class as the HTTP status and its message
// as the body, so a workload (curl, wget) and its log show what failed.
func fail(ctx context.Context, w http.ResponseWriter, what string, err error) {
	status := StatusOf(err)
	log.G(ctx).WithError(err).Warnf("workload API: %s: HTTP %d", what, status)
	http.Error(w, fmt.Sprintf("%s: %v", what, err), status)
}

// StatusOf maps an error's errdefs class to the hub's HTTP status.
func StatusOf(err error) int {
	switch {
	case errdefs.IsInvalidArgument(err):
		return http.StatusBadRequest
	case errdefs.IsPermissionDenied(err):
		return http.StatusForbidden
	case errdefs.IsUnauthorized(err):
		return http.StatusUnauthorized
	case errdefs.IsNotFound(err):
		return http.StatusNotFound
	case errdefs.IsFailedPrecondition(err), errdefs.IsNotImplemented(err):
		return http.StatusServiceUnavailable
	case errdefs.IsUnavailable(err):
		return http.StatusBadGateway
	case errdefs.IsDeadlineExceeded(err), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// fromLoopback says whether an HTTP peer address is a loopback address. The
// listener is bound to loopback, so this is a second lock on the same door.
func fromLoopback(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// ValidateResourcePath checks "<repo>/<type>/<tag>": three non-empty
// segments of [A-Za-z0-9._-], none "." or "..". It is what the KBS accepts,
// and keeps a caller from steering the request path.
func ValidateResourcePath(p string) error {
	segs := strings.Split(p, "/")
	if len(segs) != 3 {
		return fmt.Errorf("path %q: want <repo>/<type>/<tag>, e.g. default/key/1: %w", p, errdefs.ErrInvalidArgument)
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." || len(s) > 128 || !segmentChars(s) {
			return fmt.Errorf("path %q: segment %q must be 1-128 characters of [A-Za-z0-9._-] and not . or ..: %w", p, s, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func segmentChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
