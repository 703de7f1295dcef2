//go:build integration

// Package bench measures pod start phases, memory and latency of the coco
// shim next to containerd's runc shim and a bare QEMU boot, on one real
// containerd (integration/harness). `make bench` (integration/cmd/bench)
// drives it and prints the table; the JSON report is for tracking.
package bench

import (
	"math"
	"sort"
)

// Stat is the median and spread of one measured quantity over N runs.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// Summarize returns the median, min and max of xs (zero Stat for none).
// With an even count the median is the mean of the two middle values.
func Summarize(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// Series collects named samples in first-seen order.
type Series struct {
	order  []string
	values map[string][]float64
}

// Add appends v to the samples of name.
func (s *Series) Add(name string, v float64) {
	if s.values == nil {
		s.values = map[string][]float64{}
	}
	if _, ok := s.values[name]; !ok {
		s.order = append(s.order, name)
	}
	s.values[name] = append(s.values[name], v)
}

// Stats summarizes every series, in the order they were first added.
func (s *Series) Stats() []NamedStat {
	out := make([]NamedStat, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, NamedStat{Name: n, Stat: Summarize(s.values[n])})
	}
	return out
}

// NamedStat is one row of the report.
type NamedStat struct {
	Name string `json:"name"`
	Stat
}

// Ratio is a/b, or NaN-free 0 when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0
	}
	return a / b
}
