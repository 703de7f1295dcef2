// coco-image makes images for guest pull: `coco-image encrypt|sign ...`,
// also reached as `containerd-shim-coco-v2 image ...`. It is its own binary
// so that the shim, which runs once per pod, does not carry (and page in)
// the registry client and crypto it only needs on a user's workstation.
package main

import (
	"context"
	"os"

	"github.com/coco-runtime/coco/shim/cli/image/tool"
)

func main() {
	os.Exit(tool.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
