//go:build integration

package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/guest-assets/agent/image"
	"github.com/coco-runtime/coco/integration/harness"
)

// handlerGuestPull is the coco-dev class with rootfs.guest_pull, on the
// coco snapshotter: the guest pulls each container's image itself.
const handlerGuestPull = "coco-guestpull"

// registryPort is where the test registry listens in its namespace.
const registryPort = 5000

// serveRegistry runs an OCI registry (go-containerregistry's, in memory) on
// the peer's address, and tells the host's containerd to reach it over
// plain HTTP.
func serveRegistry(t *testing.T, peer *netPeer) string {
	t.Helper()
	addr := fmt.Sprintf("%s:%d", peer.ip, registryPort)
	var ln net.Listener
	if err := peer.in(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	dir := filepath.Join(harness.RegistryHostsDir(shared.ctrd.Root), addr)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+addr, "http://"+addr)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return addr
}

// busyboxWith is the test busybox image with /marker holding marker.
func busyboxWith(t *testing.T, marker string) v1.Image {
	t.Helper()
	layer, err := harness.BusyboxLayer(map[string]string{"marker": marker})
	if err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// bigImage is busybox plus /big: size bytes of random data with marker
// every MiB, so a plaintext page of it anywhere on the host would show.
func bigImage(t *testing.T, size int, marker string) v1.Image {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	for off := 0; off+len(marker) <= size; off += 1 << 20 {
		copy(data[off:], marker)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg})
	tw.Write(data)
	tw.Close()
	// Stored, not compressed: random data does not shrink, and gzip of
	// it would only cost the test's CPU.
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil },
		tarball.WithCompressionLevel(gzip.NoCompression))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(busyboxWith(t, marker), l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// holds says whether the file at p contains s, reading it in chunks (the
// scratch disk is a GiB, mostly holes).
func holds(p string, s []byte) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	carry := 0
	for {
		n, err := f.Read(buf[carry:])
		if bytes.Contains(buf[:carry+n], s) {
			return true
		}
		if err != nil {
			return false
		}
		// keep the tail: s may straddle two reads
		keep := min(len(s)-1, carry+n)
		copy(buf, buf[carry+n-keep:carry+n])
		carry = keep
	}
}

func push(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// TestGuestPull: a pod of a guest-pull class runs images its guest pulls
// from a registry on the pod network, with the signature policy and the
// layer keys from the owner's KBS: a plain image runs, a signed one runs,
// one whose tag was moved after signing is refused naming the signature,
// an encrypted one runs, and one whose key the KBS refuses is refused
// naming the key. The host never holds a layer: containerd's content
// store has none of them, and no file under containerd's root or
// /run/coco holds the markers the images carry.
func TestGuestPull(t *testing.T) {
	requireGuest(t)
	ctx := testCtx(t, 12*time.Minute)
	cri := shared.ctrd.CRI
	peer := newNetPeer(t)
	reg := serveRegistry(t, peer)
	var kbsSeen kbsLog
	srv, kbsURL := startKBS(t, peer, kbsPort, false, &kbsSeen)

	// The pod first: the CNI bridge it creates is the only way to the
	// peer's namespace; nothing is sent anywhere before it exists.
	initData := kbsInitData(kbsURL, "", "[image]\nimage_security_policy_uri = \"kbs:///default/security-policy/test\"\n"+
		"[[image.registry_config.registry]]\nlocation = \""+reg+"\"\ninsecure = true\n")
	pod, err := cri.RunPod(ctx, handlerGuestPull, harness.PodConfig(harness.PodOptions{Name: "guest-pull", LogDir: t.TempDir(),
		Annotations: map[string]string{annotationInitData: gzipBase64(t, initData)}}))
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	t.Cleanup(func() {
		if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
			t.Errorf("remove pod: %v", err)
		}
		assertNoLeftovers(t, pod.ID)
	})
	peer.attach(t)
	secret := make([]byte, 8)
	rand.Read(secret)
	markerOf := func(name string) string { return "coco-marker-" + name + "-" + hex.EncodeToString(secret) }
	refOf := func(name string) string { return reg + "/coco/" + name + ":1" }

	signKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&signKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	plainReg := image.Registry{PlainHTTP: []string{reg}}

	push(t, refOf("plain"), busyboxWith(t, markerOf("plain")))
	push(t, refOf("signed"), busyboxWith(t, markerOf("signed")))
	if _, err := image.Sign(ctx, refOf("signed"), signKey, plainReg); err != nil {
		t.Fatal(err)
	}
	// Signed, then the tag moved to an image nobody signed.
	push(t, refOf("moved"), busyboxWith(t, markerOf("moved-original")))
	if _, err := image.Sign(ctx, refOf("moved"), signKey, plainReg); err != nil {
		t.Fatal(err)
	}
	push(t, refOf("moved"), busyboxWith(t, markerOf("moved")))
	kek := make([]byte, 32)
	rand.Read(kek)
	for _, c := range []struct{ name, kid string }{{"encrypted", "kbs:///default/key/image"}, {"refused-key", "kbs:///default/key/withheld"}} {
		enc, err := image.Encrypter{Kid: c.kid, KEK: kek}.Image(busyboxWith(t, markerOf(c.name)))
		if err != nil {
			t.Fatal(err)
		}
		push(t, refOf(c.name), enc)
	}
	srv.SetResource("default/key/image", kek)
	srv.SetResource("default/key/withheld", kek)
	srv.SetResourcePolicy(func(path string, _ map[string]any) error {
		if path == "default/key/withheld" {
			return fmt.Errorf("this key is not for this workload")
		}
		return nil
	})
	keyData := string(pubPEM)
	policy, _ := json.Marshal(map[string]any{
		"default": []any{map[string]any{"type": "insecureAcceptAnything"}},
		"transports": map[string]any{"docker": map[string]any{
			reg + "/coco/signed": []any{map[string]any{"type": "sigstoreSigned", "keyData": keyData}},
			reg + "/coco/moved":  []any{map[string]any{"type": "sigstoreSigned", "keyData": keyData}},
		}},
	})
	srv.SetResource("default/security-policy/test", policy)

	run := func(t *testing.T, name string) (string, error) {
		t.Helper()
		ref := refOf(name)
		if _, err := cri.Image.PullImage(ctx, &runtimeapi.PullImageRequest{
			Image: &runtimeapi.ImageSpec{Image: ref, RuntimeHandler: handlerGuestPull}, SandboxConfig: pod.Config,
		}); err != nil {
			t.Fatalf("PullImage %s on the host: %v", ref, err)
		}
		cfg := harness.ContainerConfig(name, name+".log", "sleep", "3600")
		cfg.Image = &runtimeapi.ImageSpec{Image: ref, RuntimeHandler: handlerGuestPull}
		start := time.Now()
		id, err := cri.StartContainer(ctx, pod, cfg)
		if err != nil {
			return "", err
		}
		t.Logf("%s: CreateContainer+StartContainer with the guest pull: %v", name, time.Since(start).Round(time.Millisecond))
		out, stderr, code, err := cri.Exec(ctx, id, 30*time.Second, "cat", "/marker")
		if err != nil || code != 0 {
			t.Fatalf("cat /marker: code %d, %v: %s", code, err, stderr)
		}
		return out, nil
	}
	for _, name := range []string{"plain", "signed", "encrypted"} {
		t.Run(name+"-runs", func(t *testing.T) {
			if out, err := run(t, name); err != nil || out != markerOf(name) {
				t.Fatalf("got %q, %v; want the image's marker", out, err)
			}
		})
	}
	for _, c := range []struct{ name, want string }{
		{"moved", "signature"},
		{"refused-key", "default/key/withheld"},
	} {
		t.Run(c.name+"-refused", func(t *testing.T) {
			_, err := run(t, c.name)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), refOf(c.name)) {
				t.Fatalf("want a CRI error naming %s and %q, got %v", refOf(c.name), c.want, err)
			}
			t.Logf("refused: %v", err)
		})
	}

	// A ~50 MB image, for the pull figures (the guest logs each layer).
	t.Run("50mb-runs", func(t *testing.T) {
		push(t, refOf("mid"), bigImage(t, 48<<20, markerOf("mid")))
		if out, err := run(t, "mid"); err != nil || out != markerOf("mid") {
			t.Fatalf("got %q, %v", out, err)
		}
	})

	// 160 MiB of image in a guest of 256 MiB, whose image store's share of
	// memory is 128 MiB: it runs only because the store spills to the
	// encrypted scratch disk.
	t.Run("larger-than-memory-runs", func(t *testing.T) {
		push(t, refOf("big"), bigImage(t, 160<<20, markerOf("big")))
		if out, err := run(t, "big"); err != nil || out != markerOf("big") {
			t.Fatalf("got %q, %v", out, err)
		}
		id, err := cri.StartContainer(ctx, pod, &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "big-stat"},
			Image:    &runtimeapi.ImageSpec{Image: refOf("big"), RuntimeHandler: handlerGuestPull},
			Command:  []string{"sleep", "3600"}, LogPath: "big-stat.log", Linux: &runtimeapi.LinuxContainerConfig{},
		})
		if err != nil {
			t.Fatal(err)
		}
		out, _, _, err := cri.Exec(ctx, id, time.Minute, "sh", "-c", "wc -c < /big; awk '/^SwapTotal|^SwapFree/ {print $2}' /proc/meminfo")
		f := strings.Fields(out)
		if err != nil || len(f) != 3 || f[0] != fmt.Sprint(160<<20) {
			t.Fatalf("/big and swap: %q, %v", out, err)
		}
		var total, free int
		fmt.Sscan(f[1], &total)
		fmt.Sscan(f[2], &free)
		if total == 0 || free >= total {
			t.Fatalf("swap total %d kB, free %d kB: the image did not spill to the scratch disk", total, free)
		}
		t.Logf("in the guest: /big %s bytes; swap %d kB of %d kB in use", f[0], total-free, total)
	})

	// Where the guest's time went, from its own log on the console.
	console := filepath.Join("/run/coco", pod.ID, "vm", "console.log")
	if b, err := os.ReadFile(console); err != nil {
		t.Logf("guest console: %v", err)
	} else {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "layer unpacked") || strings.Contains(line, "image pulled") || strings.Contains(line, "scratch disk") {
				t.Logf("guest: %s", line)
			}
		}
	}

	t.Run("host-never-holds-layers", func(t *testing.T) {
		content, err := shared.ctrd.Ctr(ctx, "-n", "k8s.io", "content", "ls", "-q")
		if err != nil {
			t.Fatal(err)
		}
		for _, which := range []string{"plain", "signed", "encrypted", "mid", "big"} {
			r, _ := name.ParseReference(refOf(which), name.Insecure)
			img, err := remote.Image(r)
			if err != nil {
				t.Fatal(err)
			}
			layers, _ := img.Layers()
			for _, l := range layers {
				d, _ := l.Digest()
				if strings.Contains(content, d.String()) {
					t.Errorf("%s: layer %s is in containerd's content store", which, d)
				}
			}
		}
		for _, root := range []string{shared.ctrd.Root, "/run/coco"} {
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return nil
				}
				if holds(p, []byte(hex.EncodeToString(secret))) {
					t.Errorf("%s holds a marker of a guest-pulled image", p)
				}
				return nil
			})
		}
	})
}
