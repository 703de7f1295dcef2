// Package ratelog bounds the log lines a peer the host does not trust (the
// guest) can cause: a guest that sends forged or broken messages in a loop
// must not fill the shim's log, and with it the node's disk.
package ratelog

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
)

// Limiter lets Burst lines through per Interval and counts the rest; the
// count is reported on the next line that gets through, so nothing is
// hidden, only summarised. The zero value is not usable: call New.
type Limiter struct {
	burst    int
	interval time.Duration
	now      func() time.Time

	mu         sync.Mutex
	window     time.Time // start of the current interval
	used       int       // lines let through in this interval
	suppressed int       // lines held back since the last one let through
}

// New returns a limiter of burst lines per interval.
func New(burst int, interval time.Duration) *Limiter {
	return &Limiter{burst: max(burst, 1), interval: interval, now: time.Now}
}

// Allow reports whether one line may be logged now and, if so, how many were
// held back before it.
func (l *Limiter) Allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.window) >= l.interval {
		l.window, l.used = now, 0
	}
	if l.used >= l.burst {
		l.suppressed++
		return false, 0
	}
	l.used++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// Warn logs msg on e when the limiter allows it, with the number of lines
// held back before it as the field "suppressed".
func (l *Limiter) Warn(e *log.Entry, msg string) {
	ok, n := l.Allow()
	if !ok {
		return
	}
	if n > 0 {
		e = e.WithField("suppressed", n)
	}
	e.Warn(msg)
}

// clipLen is how much of a guest-chosen string a log line quotes.
const clipLen = 128

// Clip shortens a guest-chosen string for a log line: the guest picks its
// length, the log must not.
func Clip(s string) string {
	if len(s) <= clipLen {
		return s
	}
	return fmt.Sprintf("%s…(%d bytes)", strings.ToValidUTF8(s[:clipLen], ""), len(s))
}
