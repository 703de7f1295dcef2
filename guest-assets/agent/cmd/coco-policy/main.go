// Command coco-policy is the guest agent's Rego engine (OPA), in a process
// of its own so that the agent (PID 1) does not link OPA. The agent starts
// it the first time a policy needs compiling and talks to it over stdin and
// stdout (see guest-assets/agent/policyproc); it exits when stdin closes.
// It is not meant to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/coco-runtime/coco/guest-assets/agent/policyproc/server"
)

func main() {
	if err := server.Serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
