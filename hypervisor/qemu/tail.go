package qemu

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/coco-runtime/coco/hypervisor"
)

// QEMU's and vhost-device-vsock's stdout and stderr go to a log file in the
// VM's state dir (as with the Cloud Hypervisor driver), read back only to
// explain a failure. An *os.File as a child's output needs no copy goroutine
// and buffer in the shim: in-memory tails cost two goroutines with 32 KiB
// copy buffers plus the tails themselves, for every pod.

// openProcessLog creates (or truncates) a helper process's log.
func openProcessLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("process log: %w", err)
	}
	return f, nil
}

// processLogLines is how much of a helper's log an error quotes.
const processLogLines = 20

// processLogTail returns the end of a helper process's log for an error
// message, "" when there is none.
func processLogTail(path string) string {
	t, _ := hypervisor.Tail(path, processLogLines)
	return strings.TrimSpace(t)
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
