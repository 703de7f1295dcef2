//go:build integration

package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
	"github.com/coco-runtime/coco/integration/kbs"
)

// kbsPort is where the test KBS listens in its namespace.
const kbsPort = 8080

// kbsLog records when the test KBS saw each request, for the timeline.
type kbsLog struct {
	mu    sync.Mutex
	lines []kbsLine
}

type kbsLine struct {
	at   time.Time
	line string
}

func (l *kbsLog) logf(t *testing.T) func(string, ...any) {
	return func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		l.mu.Lock()
		l.lines = append(l.lines, kbsLine{time.Now(), line})
		l.mu.Unlock()
		t.Log(line)
	}
}

// first is when a line containing s was logged after since (zero: never).
func (l *kbsLog) first(s string, since time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lines {
		if x.at.After(since) && strings.Contains(x.line, s) {
			return x.at
		}
	}
	return time.Time{}
}

// startKBS serves a strict test KBS on peer's address and port, over
// HTTPS with a self-signed certificate when tls is set; the pod's guest
// reaches it over the pod network, nothing else does.
func startKBS(t *testing.T, peer *netPeer, port int, tls bool, log *kbsLog) (*kbs.Server, string) {
	t.Helper()
	srv := kbs.New(kbs.Options{Logf: log.logf(t), TLS: tls, TLSHosts: []string{peer.ip.String()}})
	var ln net.Listener
	if err := peer.in(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", peer.ip, port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return srv, fmt.Sprintf("%s://%s:%d", scheme, peer.ip, port)
}

// kbsInitData is an owner's init-data naming the KBS for both guest
// components, as CoCo users write it, with the KBS's certificate pinned
// when certPEM is set.
func kbsInitData(url, certPEM, extra string) string {
	aaCert, cdhCert := "", ""
	if certPEM != "" {
		aaCert = "cert = \"\"\"\n" + certPEM + "\"\"\"\n"
		cdhCert = "kbs_cert = \"\"\"\n" + certPEM + "\"\"\"\n"
	}
	return "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n" +
		"\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"" + url + "\"\n" + aaCert + "'''\n" +
		"\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"" + url + "\"\n" + cdhCert + extra + "'''\n"
}

// fetchScript asks the workload API for path with busybox nc and writes
// the HTTP status line to dir/status and the body to dir/body.
func fetchScript(path, dir string) string {
	return fmt.Sprintf(`printf 'GET %s HTTP/1.0\r\n\r\n' | nc -w 120 127.0.0.1 8006 > %s/resp; `+
		`head -n 1 %s/resp > %s/status; sed '1,/^\r$/d' %s/resp > %s/body`, path, dir, dir, dir, dir, dir)
}

// TestAttestationReleasesSecret: a coco-dev pod whose init-data names a
// test KBS (in a namespace the test made, on the pod network) attests with
// sample evidence; its init container fetches a secret from the guest's
// workload API into an emptyDir, and the app container reads it there.
// Sealed secrets reach the app container as env and as a file. With
// init-data changed by one line, the KBS refuses, and the container sees
// that refusal.
func TestAttestationReleasesSecret(t *testing.T) {
	requireGuest(t)
	ctx := testCtx(t, 8*time.Minute)
	cri := shared.ctrd.CRI
	peer := newNetPeer(t)
	var kbsSeen kbsLog
	srv, url := startKBS(t, peer, kbsPort, false, &kbsSeen)
	srv.SetResource("default/key/app", []byte("the-app-secret"))
	signing, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const kid = "kbs:///default/signing-key/sealed-secret"
	jwkBytes, err := kbs.SealingPublicJWK(&signing.PublicKey, "sealed-secret-test-key")
	if err != nil {
		t.Fatal(err)
	}
	srv.SetResource("default/signing-key/sealed-secret", jwkBytes)
	srv.SetResource("default/sealed-secret/test", []byte("unsealed_secret"))
	sealed, err := kbs.SealSecret(signing, kid, "kbs:///default/sealed-secret/test")
	if err != nil {
		t.Fatal(err)
	}

	initData := kbsInitData(url, "", "")
	ref, err := kbs.ExpectInitData([]byte(initData))
	if err != nil {
		t.Fatal(err)
	}
	srv.SetInitDataReference(ref)

	runPod := func(name, initData string) *harness.Pod {
		pod, err := cri.RunPod(ctx, "coco", harness.PodConfig(harness.PodOptions{Name: name, LogDir: t.TempDir(),
			Annotations: map[string]string{annotationInitData: gzipBase64(t, initData)}}))
		if err != nil {
			t.Fatalf("RunPodSandbox %s: %v", name, err)
		}
		t.Cleanup(func() {
			if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
				t.Errorf("remove %s: %v", name, err)
			}
			assertNoLeftovers(t, pod.ID)
		})
		return pod
	}
	// runInit runs a container that fetches path into the emptyDir at
	// /shared and waits for it to exit.
	runInit := func(pod *harness.Pod, shared string, path string) {
		t.Helper()
		cfg := harness.ContainerConfig("fetch", "fetch.log", "sh", "-c", fetchScript(path, "/shared"))
		cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/shared", HostPath: shared}}
		id, err := cri.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		st, err := cri.WaitExited(ctx, id, 3*time.Minute)
		if err != nil || st.GetExitCode() != 0 {
			t.Fatalf("init container: exit %d, %v", st.GetExitCode(), err)
		}
	}

	t0 := time.Now()
	pod := runPod("attest-ok", initData)
	t1 := time.Now()
	peer.attach(t) // the bridge exists once a pod has run
	emptyDir := t.TempDir()
	sealedFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(sealedFile, []byte(sealed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A Kubernetes Secret volume holding the sealed secret, laid out as
	// the kubelet's atomic writer does.
	secretVol := filepath.Join(t.TempDir(), "pods", "uid", "volumes", "kubernetes.io~secret", "db")
	data := filepath.Join(secretVol, "..2026_12_06_00_00_00.1")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(data, "password"), []byte(sealed), 0o644)
	os.WriteFile(filepath.Join(data, "user"), []byte("app"), 0o644)
	os.Symlink(filepath.Base(data), filepath.Join(secretVol, "..data"))
	os.Symlink("..data/password", filepath.Join(secretVol, "password"))
	os.Symlink("..data/user", filepath.Join(secretVol, "user"))

	t.Run("init-container-fetch", func(t *testing.T) {
		t2 := time.Now()
		runInit(pod, emptyDir, "/cdh/resource/default/key/app")
		t3 := time.Now()
		auth, attest, res := kbsSeen.first("POST /kbs/v0/auth", t2), kbsSeen.first("POST /kbs/v0/attest", t2), kbsSeen.first("GET /kbs/v0/resource/default/key/app", t2)
		if !auth.IsZero() && !attest.IsZero() && !res.IsZero() {
			ms := func(a, b time.Time) int64 { return b.Sub(a).Milliseconds() }
			t.Logf("timeline (ms): RunPodSandbox %d; init container create+start until the KBS sees /auth %d; /auth to /attest (challenge, key, evidence) %d; "+
				"/attest to resource GET (verification, token) %d; resource GET to the init container's exit seen (JWE, write, CRI poll) %d; total from RunPodSandbox %d",
				ms(t0, t1), ms(t2, auth), ms(auth, attest), ms(attest, res), ms(res, t3), ms(t0, t1)+ms(t2, t3))
		}
		cfg := harness.ContainerConfig("app", "app.log", "sleep", "3600")
		cfg.Mounts = []*runtimeapi.Mount{
			{ContainerPath: "/shared", HostPath: emptyDir},
			{ContainerPath: "/etc/sealed/secret", HostPath: sealedFile, Readonly: true},
			{ContainerPath: "/etc/db", HostPath: secretVol, Readonly: true},
		}
		cfg.Envs = []*runtimeapi.KeyValue{{Key: "SEALED", Value: []byte(sealed)}}
		app, err := cri.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		out, stderr, code, err := cri.Exec(ctx, app, 30*time.Second, "sh", "-c", "cat /shared/status /shared/body")
		if err != nil || code != 0 || !strings.Contains(out, " 200 ") || !strings.HasSuffix(out, "the-app-secret") {
			t.Fatalf("the app container read (code %d, %v): %q %s", code, err, out, stderr)
		}
		// The secret never reached the host's copy of the emptyDir.
		if b, _ := os.ReadFile(filepath.Join(emptyDir, "body")); len(b) != 0 {
			t.Fatalf("the host's emptyDir holds %q", b)
		}

		t.Run("sealed-env-and-file", func(t *testing.T) {
			out, stderr, code, err := cri.Exec(ctx, app, 30*time.Second, "sh", "-c",
				`echo "env=$SEALED"; echo "file=$(cat /etc/sealed/secret)"; echo "volume=$(cat /etc/db/user):$(cat /etc/db/password)"`)
			if err != nil || code != 0 || out != "env=unsealed_secret\nfile=unsealed_secret\nvolume=app:unsealed_secret\n" {
				t.Fatalf("unsealed (code %d, %v): %q %s", code, err, out, stderr)
			}
		})
		if got := srv.Served(); len(got) < 3 {
			t.Errorf("the KBS served %q, want the app key, the signing key and the sealed secret", got)
		}
	})

	t.Run("tampered-init-data-refused", func(t *testing.T) {
		tampered := kbsInitData(url, "", "# one line the owner did not write\n")
		pod := runPod("attest-tampered", tampered)
		dir := t.TempDir()
		runInit(pod, dir, "/cdh/resource/default/key/app")
		// The refusal is in the emptyDir of the guest, read by a second
		// container, as an app would see it.
		cfg := harness.ContainerConfig("app", "app.log", "sleep", "3600")
		cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/shared", HostPath: dir}}
		app, err := cri.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		out, _, _, err := cri.Exec(ctx, app, 30*time.Second, "cat", "/shared/status", "/shared/body")
		if err != nil || !strings.Contains(out, " 403 ") || !strings.Contains(out, "AttestationError") || !strings.Contains(out, "init-data") {
			t.Fatalf("want a 403 quoting the KBS's AttestationError about init-data, got (%v): %q", err, out)
		}
		if !srv.RefusedWith(kbs.ErrAttestation, "init-data digest mismatch") {
			t.Fatalf("the KBS did not refuse for the init-data; refusals: %+v", srv.Refusals())
		}
		if strings.Contains(out, "the-app-secret") {
			t.Fatal("the secret reached a pod with tampered init-data")
		}
	})

	// A sealed secret the KBS will not release stops the container, and
	// the CRI error says which variable and why.
	t.Run("sealed-secret-refused-in-cri-error", func(t *testing.T) {
		srv.SetResourcePolicy(func(path string, _ map[string]any) error {
			if path == "default/sealed-secret/denied" {
				return fmt.Errorf("not for this workload")
			}
			return nil
		})
		t.Cleanup(func() { srv.SetResourcePolicy(nil) })
		denied, err := kbs.SealSecret(signing, kid, "kbs:///default/sealed-secret/denied")
		if err != nil {
			t.Fatal(err)
		}
		srv.SetResource("default/sealed-secret/denied", []byte("never-released"))
		cfg := harness.ContainerConfig("denied", "denied.log", "sleep", "3600")
		cfg.Envs = []*runtimeapi.KeyValue{{Key: "DB_PASSWORD", Value: []byte(denied)}}
		_, err = cri.StartContainer(ctx, pod, cfg)
		if err == nil || !strings.Contains(err.Error(), "env DB_PASSWORD") || !strings.Contains(err.Error(), "PolicyDeny") {
			t.Fatalf("want a CRI error naming DB_PASSWORD and the KBS's PolicyDeny, got %v", err)
		}
		if strings.Contains(err.Error(), "never-released") {
			t.Fatal("the CRI error quotes the secret")
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("the CRI error spans lines: %q", err)
		}
	})

	// An HTTPS KBS whose certificate the owner pinned in init-data.
	t.Run("pinned-https-kbs", func(t *testing.T) {
		tlsSrv, tlsURL := startKBS(t, peer, kbsPort+1, true, &kbsSeen)
		tlsSrv.SetResource("default/key/app", []byte("over-tls"))
		pod := runPod("attest-tls", kbsInitData(tlsURL, string(tlsSrv.CertPEM()), ""))
		dir := t.TempDir()
		runInit(pod, dir, "/cdh/resource/default/key/app")
		cfg := harness.ContainerConfig("app", "app.log", "sleep", "3600")
		cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/shared", HostPath: dir}}
		app, err := cri.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		out, _, _, err := cri.Exec(ctx, app, 30*time.Second, "cat", "/shared/status", "/shared/body")
		if err != nil || !strings.Contains(out, " 200 ") || !strings.HasSuffix(out, "over-tls") {
			t.Fatalf("over the pinned HTTPS KBS (%v): %q", err, out)
		}
	})
}
