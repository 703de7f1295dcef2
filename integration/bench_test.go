//go:build integration

package integration

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/coco-runtime/coco/integration/harness"
)

// Run with: go test -tags integration ./integration -run '^$' -bench . -benchtime 5x
// The median-s metric is the median wall time of one call over the iterations.

// BenchmarkRunPodSandbox times RunPodSandbox alone (for coco: VM boot to agent ready).
func BenchmarkRunPodSandbox(b *testing.B) {
	forEachHandlerB(b, func(b *testing.B, h handlerCase) {
		cri := shared.ctrd.CRI
		var times []time.Duration
		for i := 0; i < b.N; i++ {
			cfg := harness.PodConfig(harness.PodOptions{Name: fmt.Sprintf("bench-runp-%s-%d", h.name, i), LogDir: b.TempDir()})
			start := time.Now()
			pod, err := cri.RunPod(context.Background(), h.name, cfg)
			times = append(times, time.Since(start))
			if err != nil {
				b.Fatalf("RunPodSandbox: %v", err)
			}
			b.StopTimer()
			if err := cri.RemovePod(context.Background(), pod.ID); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		reportMedian(b, times)
	})
}

// BenchmarkCreateStartContainer times CreateContainer+StartContainer in a running pod.
func BenchmarkCreateStartContainer(b *testing.B) {
	forEachHandlerB(b, func(b *testing.B, h handlerCase) {
		cri := shared.ctrd.CRI
		ctx := context.Background()
		pod, err := cri.RunPod(ctx, h.name, harness.PodConfig(harness.PodOptions{Name: "bench-create-" + h.name, LogDir: b.TempDir()}))
		if err != nil {
			b.Fatalf("RunPodSandbox: %v", err)
		}
		defer cri.RemovePod(ctx, pod.ID)
		var times []time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			_, err := cri.StartContainer(ctx, pod, harness.ContainerConfig(fmt.Sprintf("c%d", i), fmt.Sprintf("c%d.log", i), "sleep", "1000"))
			times = append(times, time.Since(start))
			if err != nil {
				b.Fatal(err)
			}
		}
		reportMedian(b, times)
	})
}

func forEachHandlerB(b *testing.B, fn func(b *testing.B, h handlerCase)) {
	for _, h := range handlerRows {
		b.Run(h.name, func(b *testing.B) {
			if h.coco && shared.cocoReason != "" {
				b.Skip(shared.cocoReason)
			}
			if h.coco {
				skipPending(b, h.name)
				if err := harness.CheckGuestAssets(shared.guestDir); err != nil {
					b.Skip(err.Error())
				}
			}
			fn(b, h)
		})
	}
}

func reportMedian(b *testing.B, times []time.Duration) {
	if len(times) == 0 {
		return
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(times[len(times)/2].Seconds(), "median-s")
}
