package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"
)

// testRegistry is go-containerregistry's in-memory registry on a loopback
// HTTP server, with hooks to corrupt blobs and require credentials.
type testRegistry struct {
	srv  *httptest.Server
	host string

	mu       sync.Mutex
	tampered map[string]bool // blob digests served with a flipped byte
	user     string          // non-empty: basic auth required
	pass     string
}

func newRegistry(t testing.TB) *testRegistry {
	t.Helper()
	r := &testRegistry{tampered: map[string]bool{}}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		user, pass := r.user, r.pass
		tamper := false
		for d := range r.tampered {
			if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/blobs/"+d) {
				tamper = true
			}
		}
		r.mu.Unlock()
		if user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		if tamper {
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, req)
			body := rec.Body.Bytes()
			if len(body) > 0 {
				body[len(body)/2] ^= 0xff
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

func (r *testRegistry) reg() Registry { return Registry{PlainHTTP: []string{r.host}} }

func (r *testRegistry) ref(repo string) string { return r.host + "/" + repo }

// push writes an image or index to the registry and returns its digest.
func (r *testRegistry) push(t testing.TB, ref string, obj remote.Taggable) string {
	t.Helper()
	n, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	switch o := obj.(type) {
	case v1.Image:
		err = remote.Write(n, o)
	case v1.ImageIndex:
		err = remote.WriteIndex(n, o)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := obj.(interface{ Digest() (v1.Hash, error) }).Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// entry is one tar entry of a test layer.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
	major, minor     int64
	pax              map[string]string
}

func file(name, body string) entry {
	return entry{name: name, body: body, typ: tar.TypeReg, mode: 0o644}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, to string) entry {
	return entry{name: name, link: to, typ: tar.TypeSymlink, mode: 0o777}
}
func hardlink(name, to string) entry { return entry{name: name, link: to, typ: tar.TypeLink} }

func tarBytes(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body)),
			Uid: e.uid, Gid: e.gid, Devmajor: e.major, Devminor: e.minor, ModTime: time.Unix(1700000000, 0), PAXRecords: e.pax, Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layer makes a layer (gzip, or zstd) of entries.
func layer(t testing.TB, zstd bool, entries ...entry) v1.Layer {
	t.Helper()
	data := tarBytes(t, entries...)
	opts := []tarball.LayerOption{}
	if zstd {
		opts = append(opts, tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	} else {
		opts = append(opts, tarball.WithMediaType(types.OCILayer))
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// image makes an OCI image of layers with cmd as its command.
func image(t testing.TB, cmd []string, layers ...v1.Layer) v1.Image {
	t.Helper()
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = cmd
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.WorkingDir = "/work"
	cf.Config.User = "1000:1000"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// cosignKey is a key pair like `cosign generate-key-pair` makes (ECDSA P-256).
func cosignKey(t testing.TB) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func newTestStore(t testing.TB, limit int64) *Store {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking keeps owners and device nodes: needs root, as the agent is")
	}
	s, err := NewStore(t.TempDir(), limit)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readLayerFile(t testing.TB, im *Image, rel string) string {
	t.Helper()
	for i := len(im.Layers) - 1; i >= 0; i-- {
		b, err := os.ReadFile(im.Layers[i] + "/" + rel)
		if err == nil {
			return string(b)
		}
	}
	t.Fatalf("%s not in any layer of %s", rel, im.Reference)
	return ""
}

var bg = context.Background()

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Verbose() {
		logrus.SetLevel(logrus.WarnLevel)
	}
	os.Exit(m.Run())
}

type (
	v1Layer = v1.Layer
	ctxT    = context.Context
)
