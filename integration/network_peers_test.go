//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// peerGet fetches http://addr/ from inside the peer's namespace.
func (p *netPeer) get(t *testing.T, addr string, limit time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var conn net.Conn
		err := p.in(func() (err error) {
			conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
			return err
		})
		if err == nil {
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
			b, rerr := io.ReadAll(conn)
			conn.Close()
			if status, _, _ := strings.Cut(string(b), "\r\n"); rerr == nil && strings.HasPrefix(status, "HTTP/1.") && strings.Contains(status, " 200 ") {
				_, body, _ := strings.Cut(string(b), "\r\n\r\n")
				return body
			}
			err = fmt.Errorf("%v: %.80q", rerr, b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET http://%s/ from %s: %v (for %s)", addr, p.name, err, limit)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// podGet fetches http://host:port/ from inside a container with busybox
// nc (busybox-static's wget dies of SIGSEGV here, even on an IP), and
// returns the whole response.
func podGet(ctx context.Context, ctr, host string, port int) (string, string, int32, error) {
	return shared.ctrd.CRI.Exec(ctx, ctr, 30*time.Second, "sh", "-c",
		fmt.Sprintf(`printf 'GET / HTTP/1.0\r\nHost: %s\r\n\r\n' | nc -w 10 %s %d`, host, host, port))
}

// webPod runs a pod of handler (with dns, if set) whose container serves
// "hello-from-<name>" over HTTP on port 8080 of the pod IP. The pod is
// removed, and checked to leave nothing, when the test ends.
func webPod(t *testing.T, ctx context.Context, handler, name string, dns *runtimeapi.DNSConfig) (ip, ctr string) {
	t.Helper()
	cri := shared.ctrd.CRI
	cfg := harness.PodConfig(harness.PodOptions{Name: name, LogDir: t.TempDir()})
	cfg.DnsConfig = dns
	pod, err := cri.RunPod(ctx, handler, cfg)
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
			t.Errorf("remove %s: %v", name, err)
		}
		assertNoLeftovers(t, pod.ID, ctr)
	})
	st, err := cri.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.ID})
	if err != nil {
		t.Fatal(err)
	}
	ip = st.GetStatus().GetNetwork().GetIp()
	ctr, err = cri.StartContainer(ctx, pod, harness.ContainerConfig("web", "web.log", "sh", "-c",
		"mkdir -p /tmp/www && echo hello-from-"+name+" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"))
	if err != nil {
		t.Fatal(err)
	}
	return ip, ctr
}

// TestPodNetworkPeers: a pod resolves a name through the DNS server in its
// resolv.conf (served from a namespace the test made and plugged into the
// CNI bridge), reaches that namespace, is reached from it, and two pods of
// the same handler reach each other over the bridge.
func TestPodNetworkPeers(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 6*time.Minute)
		cri := shared.ctrd.CRI
		peer := newNetPeer(t)
		dns := &runtimeapi.DNSConfig{Servers: []string{peer.ip.String()}, Searches: []string{"coco.test"}}
		ipA, webA := webPod(t, ctx, h.name, "peers-a-"+h.name, dns)
		peer.attach(t)
		peer.serveDNS(t, map[string]netip.Addr{"peer.coco.test.": peer.ip})
		peer.serveHTTP(t, 8081, "hello-from-peer")

		t.Run("dns", func(t *testing.T) {
			conf, _, _, err := cri.Exec(ctx, webA, 30*time.Second, "cat", "/etc/resolv.conf")
			if err != nil || !strings.Contains(conf, "nameserver "+peer.ip.String()) {
				t.Fatalf("resolv.conf (%v):\n%s", err, conf)
			}
			out, stderr, code, err := cri.Exec(ctx, webA, 30*time.Second, "nslookup", "peer.coco.test")
			if err != nil || code != 0 || !strings.Contains(out, "Address: "+peer.ip.String()) {
				t.Fatalf("nslookup peer.coco.test: code %d, err %v:\n%s%s", code, err, out, stderr)
			}
		})
		t.Run("pod-to-peer", func(t *testing.T) {
			out, stderr, code, err := podGet(ctx, webA, peer.ip.String(), 8081)
			if err != nil || code != 0 || !strings.Contains(out, "\r\n\r\nhello-from-peer") {
				t.Fatalf("GET from the pod: code %d, err %v: %q %s", code, err, out, stderr)
			}
		})
		t.Run("peer-to-pod", func(t *testing.T) {
			if got := peer.get(t, ipA+":8080", time.Minute); !strings.Contains(got, "hello-from-peers-a-"+h.name) {
				t.Fatalf("page from %s: %q", ipA, got)
			}
		})
		t.Run("pod-to-pod", func(t *testing.T) {
			ipB, webB := webPod(t, ctx, h.name, "peers-b-"+h.name, nil)
			expectPages(t, ctx, []pageFetch{
				{webB, ipA, "hello-from-peers-a-" + h.name},
				{webA, ipB, "hello-from-peers-b-" + h.name},
			})
		})
		if h.name == "runc" {
			return // its pod-to-pod above is runc to runc
		}
		// A pod of the node's other runtime reaches this one, and back:
		// coco pods and runc pods share the CNI network like any two pods.
		t.Run("runc-pod-to-pod", func(t *testing.T) {
			ipR, webR := webPod(t, ctx, "runc", "peers-r-"+h.name, nil)
			expectPages(t, ctx, []pageFetch{
				{webR, ipA, "hello-from-peers-a-" + h.name},
				{webA, ipR, "hello-from-peers-r-" + h.name},
			})
		})
	})
}

// pageFetch is one GET from a container to a pod IP and the page it wants.
type pageFetch struct{ from, to, want string }

// expectPages GETs each page (waiting up to a minute for the path to come
// up) and checks its body.
func expectPages(t *testing.T, ctx context.Context, fetches []pageFetch) {
	t.Helper()
	for _, c := range fetches {
		var out string
		waitFor(t, time.Minute, func() (bool, string) {
			o, stderr, code, err := podGet(ctx, c.from, c.to, 8080)
			out = o
			return err == nil && code == 0 && o != "", fmt.Sprintf("GET http://%s:8080/: code %d, err %v, %s", c.to, code, err, stderr)
		})
		if _, body, _ := strings.Cut(out, "\r\n\r\n"); strings.TrimSpace(body) != c.want {
			t.Errorf("page from %s: %q, want %q", c.to, out, c.want)
		}
	}
}
