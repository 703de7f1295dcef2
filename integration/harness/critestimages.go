//go:build integration

package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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
	user  string   // the config's User
	cmd   []string // the config's Cmd ("sh" when empty)
	extra []file   // entries added to busybox's, replacing those of the same name
}

func textFile(name, content string) file {
	return file{Name: name, Mode: 0o644, Data: []byte(content)}
}

func script(name, content string) file {
	return file{Name: name, Mode: 0o755, Data: []byte("#!/bin/sh\n" + content)}
}

// critestTools stand in for what the upstream busybox image has and
// Debian's busybox-static lacks, or has only as a link to busybox.
var critestTools = []file{
	// MaskedPaths masks /bin/ls: as a link, the mask would land on busybox
	// and no shell would start. (The spec still fails, for runc too: this
	// busybox's sh runs ls as a built-in applet, never exec'ing /bin/ls.)
	script("bin/ls", "exec /bin/busybox ls \"$@\"\n"),
	script("usr/bin/pgrep", `# pgrep NAME: the pids whose command is NAME
rc=1
for d in /proc/[0-9]*; do
	if [ "$(cat "$d/comm" 2>/dev/null)" = "$1" ]; then echo "${d#/proc/}"; rc=0; fi
done
exit $rc
`),
	script("usr/bin/ipcs", "# ipcs -m: the System V shared memory segments, with their ids\ncat /proc/sysvipc/shm\n"),
}

// webServer answers GET / with 200 on port (critest checks only the status).
func webServer(port int, banner string) critestImage {
	return critestImage{
		cmd:   []string{"sh", "-c", fmt.Sprintf("echo %s; exec httpd -f -p %d -h /www", banner, port)},
		extra: []file{{Name: "www", Mode: 0o755, Dir: true}, textFile("www/index.html", "coco critest web server\n")},
	}
}

// nginx is a web server whose process is named nginx, writes its pid to
// /var/run/nginx.pid and has "master process" in its command line, which
// the PID namespace specs look for.
func nginx() critestImage {
	img := webServer(80, "nginx")
	img.cmd = []string{"sh", "-c", "echo $$ >/var/run/nginx.pid; " +
		"exec -a httpd /usr/sbin/nginx -f -p 80 -h /www -c '/etc/nginx: master process.conf'"}
	img.extra = append(img.extra,
		file{Name: "usr/sbin/nginx", Mode: 0o777, Linkname: "/bin/busybox"},
		textFile("etc/nginx: master process.conf", ""),
		file{Name: "var/run", Mode: 0o755, Dir: true})
	return img
}

// critestImages are the images cri-tools' pkg/validate names (consts.go,
// consts_linux.go, multi_container_linux.go, security_context_linux.go),
// keyed by repository path and tag inside their registries. Not here:
// test-image-digest, whose name pins the upstream image's digest.
func critestImages(euid []byte) map[string]critestImage {
	const staging = "k8s-staging-cri-tools/"
	users := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
	groups := "root:x:0:\nnogroup:x:65534:\n"
	www := []file{
		textFile("etc/passwd", users+"www-data:x:33:33:www-data:/var/www:/bin/false\n"),
		textFile("etc/group", groups+"www-data:x:33:\n"),
	}
	imgs := map[string]critestImage{
		"e2e-test-images/busybox:1.29-2": {},
		"e2e-test-images/nginx:1.14-2":   nginx(),
		"e2e-test-images/httpd:2.4.39-4": webServer(80, "httpd"),
		// A set-uid root program printing its effective uid (NoNewPrivs).
		"e2e-test-images/nonewprivs:1.3": {cmd: []string{"/usr/local/bin/euid"}, extra: []file{
			{Name: "usr/local", Mode: 0o755, Dir: true}, {Name: "usr/local/bin", Mode: 0o755, Dir: true},
			{Name: "usr/local/bin/euid", Mode: 0o4755, Data: euid},
		}},
		staging + "hostnet-nginx-amd64":            webServer(12003, "nginx"),
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
		staging + "test-image-predefined-group": {user: "1000", extra: []file{
			textFile("etc/passwd", users+"default-user:x:1000:1000::/home/default-user:/bin/sh\n"),
			textFile("etc/group", groups+"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"),
		}},
	}
	for i := 1; i <= 3; i++ {
		imgs[fmt.Sprintf("%stest-image-%d:latest", staging, i)] = critestImage{}
	}
	// Each image its own content (else containerd gives one image ID all
	// its names, and a spec expecting one tag sees several), except one
	// image under three tags and pause:3.9 under two registries.
	for ref, c := range imgs {
		c.extra = append(slices.Clone(c.extra), textFile("image-name", ref))
		imgs[ref] = c
	}
	for i := 1; i <= 3; i++ {
		imgs[fmt.Sprintf("%stest-image-tags:%d", staging, i)] = critestImage{extra: []file{textFile("image-name", "test-image-tags")}}
	}
	return imgs
}

func (c critestImage) build() (v1.Image, error) {
	base, err := busyboxFiles("/bin/busybox")
	if err != nil {
		return nil, err
	}
	files := append(slices.Clone(c.extra), critestTools...)
	replaced := map[string]bool{}
	for _, f := range files {
		replaced[f.Name] = true
	}
	for _, f := range base {
		if !replaced[f.Name] {
			files = append(files, f)
		}
	}
	layer, err := layerTar(files)
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
func ServeCritestRegistry(ctx context.Context, repo, ctrdRoot string) (*CritestRegistry, error) {
	euid, err := buildEuid(ctx, repo)
	if err != nil {
		return nil, err
	}
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
	for ref, c := range critestImages(euid) {
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

// buildEuid builds integration/cmd/euid (static, small) and returns it.
func buildEuid(ctx context.Context, repo string) ([]byte, error) {
	out := filepath.Join(repo, "build", "integration", "euid")
	if o, err := run(ctx, repo, []string{"CGO_ENABLED=0"}, "go", "build", "-tags", "integration",
		"-ldflags", "-s -w", "-o", out, "./integration/cmd/euid"); err != nil {
		return nil, fmt.Errorf("harness: build euid: %w\n%s", err, o)
	}
	return os.ReadFile(out)
}
