//go:build linux

// coco-pause is the pod's sandbox container process: the agent forks it into
// the pod's namespaces (or runc runs it as /pause) and it waits there until
// SIGTERM or SIGINT.
package main

import (
	"os"

	"github.com/coco-runtime/coco/guest-assets/agent/pause"
)

func main() { os.Exit(pause.Run()) }
