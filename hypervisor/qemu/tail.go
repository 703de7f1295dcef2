package qemu

import (
	"errors"
	"os"
	"strings"
	"sync"

	"github.com/coco-runtime/coco/hypervisor"
)

// tailBuffer keeps the last max bytes written to it (a process's stderr),
// enough to explain a failure without growing without bound.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// tailLines returns the last n lines of the file at path, or a sentence
// saying why there are none.
func tailLines(path string, n int) string {
	t, err := hypervisor.Tail(path, n)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "(no console log: " + err.Error() + ")"
	case err != nil:
		return "(console log: " + err.Error() + ")"
	case t == "":
		return "(console log is empty)"
	}
	return t
}
