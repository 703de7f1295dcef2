package ratelog

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// A guest that causes a million warnings gets Burst lines per interval into
// the log, and the next line says how many were held back.
func TestFloodIsBounded(t *testing.T) {
	var buf bytes.Buffer
	lg := logrus.New()
	lg.SetOutput(&buf)
	e := logrus.NewEntry(lg)

	clock := time.Unix(1000, 0)
	l := New(5, time.Minute)
	l.now = func() time.Time { return clock }
	for range 1_000_000 {
		l.Warn(e, "forged event dropped")
	}
	if n := strings.Count(buf.String(), "\n"); n != 5 {
		t.Fatalf("%d lines logged for a flood, want the burst of 5", n)
	}
	clock = clock.Add(time.Minute)
	buf.Reset()
	l.Warn(e, "forged event dropped")
	if !strings.Contains(buf.String(), "suppressed=999995") {
		t.Fatalf("the line after the flood does not count what was held back: %q", buf.String())
	}
}

func TestClip(t *testing.T) {
	if got := Clip("short"); got != "short" {
		t.Fatalf("Clip(short) = %q", got)
	}
	long := strings.Repeat("a", 1<<20)
	if got := Clip(long); len(got) > 200 || !strings.Contains(got, "1048576 bytes") {
		t.Fatalf("Clip of 1 MiB = %d bytes %q", len(got), got[:min(len(got), 300)])
	}
}
