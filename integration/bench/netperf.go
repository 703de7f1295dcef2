//go:build integration

package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coco-runtime/coco/integration/harness"
)

// NetSample is TCP between two pods of one handler over the harness's CNI
// bridge, measured inside the client pod with busybox tools.
type NetSample struct {
	Handler string `json:"handler"`
	// ThroughputMBps is a bulk transfer client → server (nc into /dev/null),
	// MB/s over BulkBytes; the clock is the client's /proc/uptime (10 ms).
	ThroughputMBps float64 `json:"throughput_mbps"`
	BulkBytes      int     `json:"bulk_bytes"`
	// RequestMs is the mean of Requests HTTP/1.0 GETs of a small page
	// (busybox httpd), each a new connection and a new nc process: what a
	// client process in the pod sees, process start included.
	RequestMs float64 `json:"request_ms"`
	Requests  int     `json:"requests"`
}

const (
	netBulkBytes = 32 << 20
	netRequests  = 20
)

// PodToPod runs a server and a client pod of handler, measures, and
// removes both.
func PodToPod(ctx context.Context, env Env, handler, name string) (NetSample, error) {
	ctx, cancel := context.WithTimeout(ctx, PodTimeout)
	defer cancel()
	ns := NetSample{Handler: handler, BulkBytes: netBulkBytes, Requests: netRequests}
	_, serverIP, cleanup, err := netPod(ctx, env, handler, name+"-srv",
		"mkdir -p /tmp/www && echo ok > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && "+
			"while true; do nc -l -p 5001 > /dev/null; done")
	if err != nil {
		return ns, err
	}
	defer cleanup()
	client, _, cleanupC, err := netPod(ctx, env, handler, name+"-cli", "exec sleep 3600")
	if err != nil {
		return ns, err
	}
	defer cleanupC()
	// Both servers are up once one request gets through.
	deadline := time.Now().Add(time.Minute)
	for {
		out, _, code, err := env.CRI.Exec(ctx, client, 30*time.Second, "sh", "-c",
			fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 %s 8080 && echo | nc -w 5 %s 5001`, serverIP, serverIP))
		if err == nil && code == 0 && strings.Contains(out, "200 OK") {
			break
		}
		if time.Now().After(deadline) {
			return ns, fmt.Errorf("%s: server pod %s not reachable from the client pod: code %d, %v, %q", handler, serverIP, code, err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	secs, err := timed(ctx, env, client, fmt.Sprintf(`head -c %d /dev/zero | nc -w 10 %s 5001`, netBulkBytes, serverIP))
	if err != nil {
		return ns, fmt.Errorf("%s: bulk transfer: %w", handler, err)
	}
	ns.ThroughputMBps = float64(netBulkBytes) / 1e6 / secs
	secs, err = timed(ctx, env, client, fmt.Sprintf(
		`for i in $(seq %d); do printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 %s 8080 > /dev/null || exit 1; done`, netRequests, serverIP))
	if err != nil {
		return ns, fmt.Errorf("%s: requests: %w", handler, err)
	}
	ns.RequestMs = secs * 1000 / netRequests
	return ns, nil
}

// timed runs script in ctr and returns how long it took by the pod's own
// clock (/proc/uptime, 10 ms resolution).
func timed(ctx context.Context, env Env, ctr, script string) (float64, error) {
	out, stderr, code, err := env.CRI.Exec(ctx, ctr, 2*time.Minute, "sh", "-c",
		`a=$(cut -d' ' -f1 /proc/uptime); `+script+` || exit 1; b=$(cut -d' ' -f1 /proc/uptime); echo "$a $b"`)
	if err != nil || code != 0 {
		return 0, fmt.Errorf("code %d, %v: %s", code, err, stderr)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return 0, fmt.Errorf("unexpected output %q", out)
	}
	a, err1 := strconv.ParseFloat(f[0], 64)
	b, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || b < a {
		return 0, fmt.Errorf("unexpected output %q", out)
	}
	return max(b-a, 0.01), nil
}

// netPod runs a pod of handler with one busybox container running script,
// and returns the container, the pod IP and its removal.
func netPod(ctx context.Context, env Env, handler, name, script string) (string, string, func(), error) {
	cfg := harness.PodConfig(harness.PodOptions{Name: name, LogDir: filepath.Join(env.LogDir, name)})
	pod, err := env.CRI.RunPod(ctx, handler, cfg)
	if err != nil {
		return "", "", nil, fmt.Errorf("%s: RunPodSandbox: %w", name, err)
	}
	cleanup := func() { env.CRI.RemovePod(context.WithoutCancel(ctx), pod.ID) }
	st, err := env.CRI.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.ID})
	if err != nil || st.GetStatus().GetNetwork().GetIp() == "" {
		cleanup()
		return "", "", nil, fmt.Errorf("%s: no pod IP: %v", name, err)
	}
	ctr, err := env.CRI.StartContainer(ctx, pod, harness.ContainerConfig("c", "c.log", "sh", "-c", script))
	if err != nil {
		cleanup()
		return "", "", nil, fmt.Errorf("%s: %w", name, err)
	}
	return ctr, st.GetStatus().GetNetwork().GetIp(), cleanup, nil
}

// NetStats are the medians per handler of the samples.
func NetStats(samples []NetSample) []NetSample {
	by := map[string][]NetSample{}
	var order []string
	for _, s := range samples {
		if _, ok := by[s.Handler]; !ok {
			order = append(order, s.Handler)
		}
		by[s.Handler] = append(by[s.Handler], s)
	}
	var out []NetSample
	for _, h := range order {
		ss := by[h]
		med := func(f func(NetSample) float64) float64 {
			v := make([]float64, len(ss))
			for i, s := range ss {
				v[i] = f(s)
			}
			sort.Float64s(v)
			return v[len(v)/2]
		}
		out = append(out, NetSample{Handler: h, BulkBytes: ss[0].BulkBytes, Requests: ss[0].Requests,
			ThroughputMBps: med(func(s NetSample) float64 { return s.ThroughputMBps }),
			RequestMs:      med(func(s NetSample) float64 { return s.RequestMs })})
	}
	return out
}
