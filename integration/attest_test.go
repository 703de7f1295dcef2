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
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
	"github.com/coco-runtime/coco/integration/kbs"
)

// kbsPort is where the test KBS listens in its namespace.
const kbsPort = 8080

// startKBS serves a strict test KBS on peer's address; the pod's guest
// reaches it over the pod network, nothing else does.
func startKBS(t *testing.T, peer *netPeer) (*kbs.Server, string) {
	t.Helper()
	srv := kbs.New(kbs.Options{Logf: t.Logf})
	var ln net.Listener
	if err := peer.in(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", peer.ip, kbsPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv, fmt.Sprintf("http://%s:%d", peer.ip, kbsPort)
}

// kbsInitData is an owner's init-data naming the KBS for both guest
// components, as CoCo users write it.
func kbsInitData(url, extra string) string {
	return "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n" +
		"\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"" + url + "\"\n'''\n" +
		"\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"" + url + "\"\n" + extra + "'''\n"
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
	srv, url := startKBS(t, peer)
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

	initData := kbsInitData(url, "")
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

	pod := runPod("attest-ok", initData)
	peer.attach(t) // the bridge exists once a pod has run
	emptyDir := t.TempDir()
	sealedFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(sealedFile, []byte(sealed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("init-container-fetch", func(t *testing.T) {
		runInit(pod, emptyDir, "/cdh/resource/default/key/app")
		cfg := harness.ContainerConfig("app", "app.log", "sleep", "3600")
		cfg.Mounts = []*runtimeapi.Mount{
			{ContainerPath: "/shared", HostPath: emptyDir},
			{ContainerPath: "/etc/sealed/secret", HostPath: sealedFile, Readonly: true},
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
			out, stderr, code, err := cri.Exec(ctx, app, 30*time.Second, "sh", "-c", `echo "env=$SEALED"; echo "file=$(cat /etc/sealed/secret)"`)
			if err != nil || code != 0 || out != "env=unsealed_secret\nfile=unsealed_secret\n" {
				t.Fatalf("unsealed (code %d, %v): %q %s", code, err, out, stderr)
			}
		})
		if got := srv.Served(); len(got) < 3 {
			t.Errorf("the KBS served %q, want the app key, the signing key and the sealed secret", got)
		}
	})

	t.Run("tampered-init-data-refused", func(t *testing.T) {
		tampered := kbsInitData(url, "# one line the owner did not write\n")
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
}
