package cdh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/guest-assets/agent/attest"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

type fakeBroker struct {
	resources map[string][]byte
	err       error
	calls     int
	evidence  []byte // last runtime data asked for
}

func (f *fakeBroker) Resource(_ context.Context, path string) ([]byte, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	b, ok := f.resources[path]
	if !ok {
		return nil, fmt.Errorf("KBS: resource %s: HTTP 404: %w", path, errdefs.ErrNotFound)
	}
	return b, nil
}

func (f *fakeBroker) Token(context.Context) ([]byte, error) {
	f.calls++
	return []byte(`{"token":"t"}`), f.err
}

func (f *fakeBroker) Evidence(_ context.Context, d []byte) ([]byte, error) {
	f.calls++
	f.evidence = d
	return []byte(`{"svn":"1"}`), f.err
}

func (f *fakeBroker) Unseal(_ context.Context, s string) ([]byte, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return []byte("plain:" + strings.TrimPrefix(s, SealedPrefix)), nil
}

func (f *fakeBroker) Tee() string { return "sample" }

// denyPaths is a policy that refuses the listed resource paths.
func denyPaths(paths ...string) Judge {
	return func(_ context.Context, req proto.Message) error {
		if r, ok := req.(*api.GetResourceRequest); ok {
			for _, p := range paths {
				if r.GetPath() == p {
					return fmt.Errorf("GetResourceRequest denied by agent policy: %w", errdefs.ErrPermissionDenied)
				}
			}
		}
		return nil
	}
}

func serve(t *testing.T, h *Hub, remote, target string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func newHub(b *fakeBroker, judge Judge) *Hub {
	return New(func(context.Context) (Broker, error) { return b, nil }, judge, "test")
}

func TestResource(t *testing.T) {
	b := &fakeBroker{resources: map[string][]byte{"default/key/1": []byte("s3cret")}}
	h := newHub(b, denyPaths("default/key/2"))
	code, body := serve(t, h, "127.0.0.1:4000", "/cdh/resource/default/key/1")
	if code != 200 || body != "s3cret" {
		t.Fatalf("got %d %q", code, body)
	}
	code, body = serve(t, h, "127.0.0.1:4000", "/cdh/resource/default/key/9")
	if code != 404 || !strings.Contains(body, "default/key/9") {
		t.Fatalf("missing resource: got %d %q", code, body)
	}
}

// The host is not the only one the hub distrusts: a caller from outside the
// guest's loopback, a path that would steer the KBS request, and a path
// the owner's policy forbids are refused before the KBS is asked.
func TestResourceRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, remote, target string
		code                 int
		want                 string
	}{
		{"not loopback", "10.88.0.7:5000", "/cdh/resource/default/key/1", 403, "Forbidden"},
		{"ipv6 not loopback", "[fd00::7]:5000", "/cdh/resource/default/key/1", 403, "Forbidden"},
		{"dot dot", "127.0.0.1:1", "/cdh/resource/default/../1", 400, "segment"},
		{"two segments", "127.0.0.1:1", "/cdh/resource/default/key", 400, "<repo>/<type>/<tag>"},
		{"four segments", "127.0.0.1:1", "/cdh/resource/default/key/1/x", 400, "<repo>/<type>/<tag>"},
		{"empty segment", "127.0.0.1:1", "/cdh/resource/default//1", 400, "segment"},
		{"query chars", "127.0.0.1:1", "/cdh/resource/default/key/1%3Fa=b", 400, "segment"},
		{"policy", "127.0.0.1:1", "/cdh/resource/default/key/2", 403, "denied by agent policy"},
		{"unknown path", "127.0.0.1:1", "/cdh/other", 404, "URL NOT FOUND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &fakeBroker{resources: map[string][]byte{"default/key/1": []byte("x"), "default/key/2": []byte("y")}}
			code, body := serve(t, newHub(b, denyPaths("default/key/2")), tc.remote, tc.target)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %q, want %d with %q", code, body, tc.code, tc.want)
			}
			if b.calls != 0 {
				t.Fatalf("the broker was asked %d times", b.calls)
			}
		})
	}
}

func TestErrorStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("KBS http://10.0.0.1:8080 unreachable: %w", errdefs.ErrUnavailable), 502},
		{fmt.Errorf("attestation refused: AttestationError: bad: %w", errdefs.ErrPermissionDenied), 403},
		{fmt.Errorf("no KBS configured: %w", errdefs.ErrFailedPrecondition), 503},
		{context.DeadlineExceeded, 504},
		{errors.New("other"), 500},
	} {
		b := &fakeBroker{err: tc.err}
		code, body := serve(t, newHub(b, denyPaths()), "127.0.0.1:1", "/cdh/resource/default/key/1")
		if code != tc.code || !strings.Contains(body, tc.err.Error()) {
			t.Errorf("%v: got %d %q, want %d", tc.err, code, body, tc.code)
		}
	}
}

func TestTokenAndEvidence(t *testing.T) {
	b := &fakeBroker{}
	h := newHub(b, denyPaths())
	if code, body := serve(t, h, "127.0.0.1:1", "/aa/token?token_type=kbs"); code != 200 || body != `{"token":"t"}` {
		t.Fatalf("token: %d %q", code, body)
	}
	if code, _ := serve(t, h, "127.0.0.1:1", "/aa/token"); code != 400 {
		t.Fatalf("token without type: %d", code)
	}
	if code, _ := serve(t, h, "127.0.0.1:1", "/aa/evidence?runtime_data=aGVsbG8&encoding=base64"); code != 200 || string(b.evidence) != "hello" {
		t.Fatalf("evidence: %d %q", code, b.evidence)
	}
	if code, _ := serve(t, h, "127.0.0.1:1", "/aa/evidence?runtime_data=plain"); code != 200 || string(b.evidence) != "plain" {
		t.Fatalf("evidence: %d %q", code, b.evidence)
	}
	for _, q := range []string{"", "?runtime_data=a&runtime_data=b", "?runtime_data=***&encoding=base64", "?runtime_data=a&encoding=hex", "?runtime_data=" + strings.Repeat("a", maxRuntimeData+1)} {
		if code, _ := serve(t, h, "127.0.0.1:1", "/aa/evidence"+q); code != 400 {
			t.Errorf("evidence%s: %d, want 400", q[:min(len(q), 40)], code)
		}
	}
}

func TestUnsealEnv(t *testing.T) {
	b := &fakeBroker{}
	env := []string{"A=1", "S=sealed.x.y.z", "B=sealedno"}
	if err := UnsealEnv(context.Background(), env, b.Unseal); err != nil {
		t.Fatal(err)
	}
	if env[1] != "S=plain:x.y.z" || env[0] != "A=1" || env[2] != "B=sealedno" {
		t.Fatalf("env: %q", env)
	}
	b.err = fmt.Errorf("attestation refused: %w", errdefs.ErrPermissionDenied)
	err := UnsealEnv(context.Background(), []string{"S=sealed.secretbits"}, b.Unseal)
	if err == nil || !strings.Contains(err.Error(), "env S") || strings.Contains(err.Error(), "secretbits") {
		t.Fatalf("error %v: want one naming the variable and not its value", err)
	}
	if err := UnsealEnv(context.Background(), []string{"S=sealed.a"}, nil); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("no broker: %v", err)
	}
}

func TestUnsealFiles(t *testing.T) {
	dir := t.TempDir()
	sealed, plain := filepath.Join(dir, "s"), filepath.Join(dir, "p")
	os.WriteFile(sealed, []byte("sealed.a.b.c\n"), 0o640)
	os.WriteFile(plain, []byte("hello"), 0o644)
	files := map[string]string{"/etc/secret/s": sealed, "/etc/p": plain}
	if err := UnsealFiles(context.Background(), files, (&fakeBroker{}).Unseal); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(sealed); string(b) != "plain:a.b.c" {
		t.Fatalf("sealed file: %q", b)
	}
	if st, _ := os.Stat(sealed); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", st.Mode())
	}
	if b, _ := os.ReadFile(plain); string(b) != "hello" {
		t.Fatalf("plain file: %q", b)
	}
}

// An attestation client's error keeps its message, gains the class the hub
// and the CRI error need, and crosses ttrpc as one line.
func TestClassify(t *testing.T) {
	refused := &attest.RefusedError{URL: "http://kbs/kbs/v0/attest", Status: 401, Type: "AttestationError", Detail: "init-data digest mismatch"}
	for _, tc := range []struct {
		err  error
		is   error
		code int
	}{
		{refused, errdefs.ErrPermissionDenied, 403},
		{&attest.ResourceError{Resource: "a/b/c", Status: 404}, errdefs.ErrNotFound, 404},
		{&attest.ResourceError{Resource: "a/b/c", Status: 401, Type: "PolicyDeny"}, errdefs.ErrPermissionDenied, 403},
		{&attest.UnreachableError{URL: "http://kbs", Err: errors.New("connection refused")}, errdefs.ErrUnavailable, 502},
		{fmt.Errorf("init-data cdh.toml: %w", attest.ErrNoKBS), errdefs.ErrFailedPrecondition, 503},
	} {
		got := classify(fmt.Errorf("resource: %w", tc.err))
		if !errors.Is(got, tc.is) || StatusOf(got) != tc.code || got.Error() != "resource: "+tc.err.Error()+": "+tc.is.Error() {
			t.Errorf("%v: class %v, status %d, message %q", tc.err, tc.is, StatusOf(got), got)
		}
		wire := errgrpc.ToNative(errgrpc.ToGRPC(fmt.Errorf("env X: %w", got)))
		if strings.Contains(wire.Error(), "\n") || !errors.Is(wire, tc.is) {
			t.Errorf("over ttrpc: %q", wire)
		}
	}
}
