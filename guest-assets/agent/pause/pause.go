//go:build linux

// Package pause is the sandbox container's process: coco-agent started as
// /pause holds the pod's namespaces, reaps orphans (it may be PID 1 of a
// shared pid namespace) and exits on SIGTERM or SIGINT.
package pause

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// Run blocks until SIGTERM or SIGINT and returns the exit code.
func Run() int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD)
	for s := range sigs {
		if s == unix.SIGCHLD {
			for {
				pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		return 0
	}
	return 0
}
