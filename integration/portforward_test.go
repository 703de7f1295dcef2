//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// portForwardGet does what `kubectl port-forward` + `curl` do, through the
// CRI: PortForward gives a streaming URL, which speaks SPDY
// (portforward.k8s.io); one error and one data stream per connection to a
// pod port. It returns the HTTP response and how long the first byte took
// after the request was written.
func portForwardGet(ctx context.Context, podID string, port int32) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := shared.ctrd.CRI.Runtime.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{port}})
	if err != nil {
		return "", 0, fmt.Errorf("PortForward: %w", err)
	}
	rt, err := spdy.NewRoundTripper(nil)
	if err != nil {
		return "", 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, resp.GetUrl(), nil)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set(httpstream.HeaderProtocolVersion, "portforward.k8s.io")
	up, err := rt.RoundTrip(req)
	if err != nil {
		return "", 0, fmt.Errorf("upgrade %s: %w", resp.GetUrl(), err)
	}
	conn, err := rt.NewConnection(up)
	if err != nil {
		return "", 0, fmt.Errorf("upgrade %s: %w", resp.GetUrl(), err)
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })() // reads have no deadline of their own
	h := http.Header{}
	h.Set("port", fmt.Sprint(port))
	h.Set("requestID", "0")
	h.Set("streamType", "error")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		return "", 0, err
	}
	errStream.Close() // nothing to send on it; the server writes failures there
	errText := make(chan string, 1)
	go func() { b, _ := io.ReadAll(io.LimitReader(errStream, 4096)); errText <- string(b) }()
	h.Set("streamType", "data")
	data, err := conn.CreateStream(h)
	if err != nil {
		return "", 0, err
	}
	sent := time.Now()
	if _, err := fmt.Fprintf(data, "GET / HTTP/1.0\r\nHost: localhost:%d\r\n\r\n", port); err != nil {
		return "", 0, err
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(data, first); err != nil {
		select {
		case e := <-errText:
			return "", 0, fmt.Errorf("no answer: %v (error stream: %q)", err, e)
		case <-time.After(5 * time.Second):
			return "", 0, fmt.Errorf("no answer: %w", err)
		}
	}
	firstByte := time.Since(sent)
	rest, err := io.ReadAll(io.LimitReader(data, 1<<20))
	return string(first) + string(rest), firstByte, err
}

// podNetNS is the network namespace containerd made for the pod, from the
// verbose status ("" under sandboxer = "shim", whose status has no spec).
func podNetNS(t *testing.T, ctx context.Context, podID string) string {
	t.Helper()
	st, err := shared.ctrd.CRI.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string }
			}
		}
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil {
		t.Fatalf("sandbox info: %v", err)
	}
	for _, ns := range info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			return ns.Path
		}
	}
	return ""
}

// TestPortForward: `kubectl port-forward` to a pod's port returns the page
// its container serves, for runc (containerd dials it in the pod's
// namespace) and for coco pods (the shim's loopback redirect carries the
// connection into the guest). A port nothing serves fails cleanly; after
// the pod is removed, no listener, rule or namespace is left.
func TestPortForward(t *testing.T) {
	forEachHandler(t, func(t *testing.T, h handlerCase) {
		ctx := testCtx(t, 5*time.Minute)
		cri := shared.ctrd.CRI
		name := "pf-" + h.name
		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: name, LogDir: t.TempDir()}))
		if err != nil {
			t.Fatalf("RunPodSandbox: %v", err)
		}
		var ctr string
		removed := false
		remove := func() {
			if removed {
				return
			}
			removed = true
			if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
				t.Errorf("remove %s: %v", name, err)
			}
			assertNoLeftovers(t, pod.ID, ctr)
		}
		t.Cleanup(remove)
		nsPath := podNetNS(t, ctx, pod.ID)
		ctr, err = cri.StartContainer(ctx, pod, harness.ContainerConfig("web", "web.log", "sh", "-c",
			"mkdir -p /tmp/www && echo hello-from-"+name+" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"))
		if err != nil {
			t.Fatal(err)
		}

		var page string
		var firsts []time.Duration
		waitFor(t, time.Minute, func() (bool, string) {
			got, first, err := portForwardGet(ctx, pod.ID, 8080)
			page = got
			if err == nil {
				firsts = append(firsts, first)
			}
			return err == nil && strings.Contains(got, " 200 "), fmt.Sprintf("port-forward to 8080: %v: %.120q", err, got)
		})
		if _, body, _ := strings.Cut(page, "\r\n\r\n"); strings.TrimSpace(body) != "hello-from-"+name {
			t.Fatalf("page through port-forward: %q", page)
		}
		// A few more, for the first-byte latency of a warm pod.
		for range 5 {
			if _, first, err := portForwardGet(ctx, pod.ID, 8080); err == nil {
				firsts = append(firsts, first)
			}
		}
		t.Logf("%s: port-forward first byte after the request: %v", h.name, firsts)

		// Nothing serves 8081: the client sees the connection end, no page.
		if got, _, err := portForwardGet(ctx, pod.ID, 8081); err == nil && strings.Contains(got, "200") {
			t.Fatalf("port-forward to an unserved port answered %q", got)
		}

		remove()
		if _, err := os.Stat(nsPath); nsPath != "" && err == nil {
			t.Errorf("pod network namespace %s left after removal", nsPath)
		}
	})
}
