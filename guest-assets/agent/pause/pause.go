//go:build linux

// Package pause is the sandbox container's process (the coco-pause binary):
// it holds the pod's namespaces, reaps orphans (it may be PID 1 of a shared
// pid namespace) and exits on SIGTERM or SIGINT. It links nothing else, so
// it starts in a few milliseconds where the agent binary would take
// hundreds under TCG.
package pause

import (
	"os"
	"os/signal"
	"strconv"

	"golang.org/x/sys/unix"
)

// GuestPath is where the initrd holds coco-pause.
const GuestPath = "/usr/bin/coco-pause"

// ReadyFDEnv names the file descriptor on which Run writes one byte once
// its signal handlers are in place (the agent waits for it; runc starts
// pause without it).
const ReadyFDEnv = "COCO_PAUSE_READY_FD"

// Run blocks until SIGTERM or SIGINT and returns the exit code.
func Run() int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGCHLD)
	if fd, err := strconv.Atoi(os.Getenv(ReadyFDEnv)); err == nil && fd > 2 {
		unix.Write(fd, []byte{'+'})
		unix.Close(fd)
	}
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
