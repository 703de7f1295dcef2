// Package version identifies this build of the shim. Version and Revision
// are set at link time by the Makefile (-ldflags -X); they stay "dev" and ""
// in `go build` and `go test` builds.
package version

import (
	"fmt"
	"io"
	"runtime"
)

// Set with -ldflags "-X github.com/coco-runtime/coco/shim/version.Version=...".
var (
	Version  = "dev"
	Revision = ""
)

const (
	// Name is the binary name containerd derives from RuntimeName.
	Name = "containerd-shim-coco-v2"
	// RuntimeName is the runtime_type users put in containerd's config.
	RuntimeName = "io.containerd.coco.v2"
)

// Print writes the `--version` report.
func Print(w io.Writer) {
	rev := Revision
	if rev == "" {
		rev = "unknown"
	}
	fmt.Fprintf(w, "%s:\n  Version:    %s\n  Revision:   %s\n  Go version: %s\n", Name, Version, rev, runtime.Version())
}
