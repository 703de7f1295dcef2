// testshim is containerd-shim-coco-v2 with the fake sandbox instead of VMs:
// the protocol test builds it and drives it exactly as containerd drives the
// real binary (start, ttrpc, delete).
package main

import (
	"context"
	"os"

	"github.com/containerd/containerd/v2/pkg/shim"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/sandbox/sandboxtest"
	"github.com/coco-runtime/coco/shim/manager"
	"github.com/coco-runtime/coco/shim/plugin"
	"github.com/coco-runtime/coco/shim/pod"
	"github.com/coco-runtime/coco/shim/version"
)

func main() {
	factory := &sandboxtest.Factory{PID: os.Getpid()}
	plugin.Register(pod.Deps{
		Factory: factory.New,
		// The fake records which file was selected; nothing is read.
		LoadConfig: func(path string) (*configs.Config, error) { return &configs.Config{Path: path}, nil },
		Getenv:     os.Getenv,
	})
	shim.RunShim(context.Background(), manager.New(version.RuntimeName, manager.Config{
		Cleanup: sandboxtest.Cleanup,
		Getenv:  os.Getenv,
	}), func(c *shim.Config) {
		c.NoReaper = true
		c.NoSubreaper = true
	})
}
