//go:build integration

package harness

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// critestRegistries are the registries critest's image names point at;
// containerd is told (certs.d) to fetch all of them from the test registry.
var critestRegistries = []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io"}

// critestImage is one image critest pulls, made from Debian's busybox.
type critestImage struct {
	user  string            // the config's User
	cmd   []string          // the config's Cmd ("sh" when empty)
	extra map[string]string // files added to (or replacing) busybox's
}

// httpServer answers GET / with 200 on port 80, as the nginx and httpd
// images critest uses do (it only checks the status code).
func httpServer(port int) critestImage {
	return critestImage{
		cmd:   []string{"httpd", "-f", "-p", fmt.Sprint(port), "-h", "/www"},
		extra: map[string]string{"www/index.html": "coco critest web server\n"},
	}
}

// critestImages are the images cri-tools' pkg/validate names (consts.go,
// consts_linux.go, multi_container_linux.go), keyed by repository path and
// tag inside their registries. Not here: test-image-digest, whose name pins
// a digest of the upstream image that no image built here can have.
func critestImages() map[string]critestImage {
	const staging = "k8s-staging-cri-tools/"
	users := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
	groups := "root:x:0:\nnogroup:x:65534:\n"
	www := map[string]string{
		"etc/passwd": users + "www-data:x:33:33:www-data:/var/www:/bin/false\n",
		"etc/group":  groups + "www-data:x:33:\n",
	}
	imgs := map[string]critestImage{
		"e2e-test-images/busybox:1.29-2":           {},
		"e2e-test-images/nginx:1.14-2":             httpServer(80),
		"e2e-test-images/httpd:2.4.39-4":           httpServer(80),
		staging + "hostnet-nginx-amd64":            httpServer(12003),
		"pause:3.9":                                {cmd: []string{"sleep", "2147483647"}},
		staging + "test-image-latest":              {},
		staging + "test-image-tag:test":            {},
		staging + "test-image-tag:all":             {},
		staging + "test-image-user-uid":            {user: "1002"},
		staging + "test-image-user-uid-group":      {user: "1003:1003"},
		staging + "test-image-user-username":       {user: "www-data", extra: www},
		staging + "test-image-user-username-group": {user: "www-data:www-data", extra: www},
		// uid 1000 is a member of group 50000 in the image's /etc/group
		// (SupplementalGroupsPolicy specs).
		staging + "test-image-predefined-group": {user: "1000", extra: map[string]string{
			"etc/passwd": users + "default-user:x:1000:1000::/home/default-user:/bin/sh\n",
			"etc/group":  groups + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
		}},
	}
	for i := 1; i <= 3; i++ {
		imgs[fmt.Sprintf("%stest-image-%d:latest", staging, i)] = critestImage{}
	}
	// Each image its own content (else containerd gives one image ID all
	// its names, and a spec expecting one tag sees several), except one
	// image under three tags and pause:3.9 under two registries.
	for ref, c := range imgs {
		c.extra = maps.Clone(c.extra)
		if c.extra == nil {
			c.extra = map[string]string{}
		}
		c.extra["image-name"] = ref
		imgs[ref] = c
	}
	for i := 1; i <= 3; i++ {
		imgs[fmt.Sprintf("%stest-image-tags:%d", staging, i)] = critestImage{extra: map[string]string{"image-name": "test-image-tags"}}
	}
	return imgs
}

func (c critestImage) build() (v1.Image, error) {
	files, err := busyboxFiles("/bin/busybox")
	if err != nil {
		return nil, err
	}
	// layerTar keeps the first entry of a name: extra files go first.
	var extra []file
	for n, content := range c.extra {
		extra = append(extra, file{Name: n, Mode: 0o644, Data: []byte(content)})
		if dir := filepath.Dir(n); dir != "." && dir != "etc" {
			extra = append(extra, file{Name: dir, Mode: 0o755, Dir: true})
		}
	}
	layer, err := layerTar(append(extra, files...))
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, err
	}
	cmd := c.cmd
	if len(cmd) == 0 {
		cmd = []string{"sh"}
	}
	return mutate.Config(img, v1.Config{Cmd: cmd, User: c.user, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}})
}

// CritestRegistry serves critest's images on 127.0.0.1 and points
// containerd's registry hosts (certs.d under containerd's root) for
// registry.k8s.io, gcr.io and k8s.gcr.io at it.
type CritestRegistry struct {
	Addr  string
	srv   *http.Server
	hosts []string // certs.d directories written
}

// ServeCritestRegistry starts the registry, pushes the images and writes
// the hosts.toml files; Close undoes all of it.
func ServeCritestRegistry(ctrdRoot string) (*CritestRegistry, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &CritestRegistry{
		Addr: ln.Addr().String(),
		srv:  &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second},
	}
	go r.srv.Serve(ln)
	ok := false
	defer func() {
		if !ok {
			r.Close()
		}
	}()
	for ref, c := range critestImages() {
		img, err := c.build()
		if err != nil {
			return nil, fmt.Errorf("harness: critest image %s: %w", ref, err)
		}
		if !strings.Contains(ref, ":") {
			ref += ":latest"
		}
		dst, err := name.ParseReference(r.Addr+"/"+ref, name.Insecure)
		if err != nil {
			return nil, err
		}
		if err := remote.Write(dst, img); err != nil {
			return nil, fmt.Errorf("harness: push %s: %w", dst, err)
		}
	}
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+r.Addr, "http://"+r.Addr)
	for _, reg := range critestRegistries {
		dir := filepath.Join(RegistryHostsDir(ctrdRoot), reg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		r.hosts = append(r.hosts, dir)
		if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			return nil, err
		}
	}
	ok = true
	return r, nil
}

// Close stops the registry and removes the hosts.toml files.
func (r *CritestRegistry) Close() error {
	for _, dir := range r.hosts {
		os.RemoveAll(dir)
	}
	return r.srv.Close()
}
