// containerd-shim-coco-v2 runs every pod in its own confidential VM.
// containerd starts it as the shim of runtime_type "io.containerd.coco.v2".
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd/containerd/v2/pkg/shim"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/sandbox"
	"github.com/coco-runtime/coco/shim/cli/check"
	"github.com/coco-runtime/coco/shim/cli/image"
	"github.com/coco-runtime/coco/shim/cli/measure"
	"github.com/coco-runtime/coco/shim/cli/policy"
	"github.com/coco-runtime/coco/shim/cli/vmcommand"
	"github.com/coco-runtime/coco/shim/manager"
	"github.com/coco-runtime/coco/shim/plugin"
	"github.com/coco-runtime/coco/shim/pod"
	"github.com/coco-runtime/coco/shim/version"
)

// subcommand finds a user-facing tool of the same binary; they run before
// the shim protocol takes over argv and return the process exit code.
func subcommand(name string) (func(ctx context.Context, args []string, stdout, stderr io.Writer) int, bool) {
	switch name {
	case "check":
		return check.Main, true
	case "vm-command":
		return vmcommand.Main, true
	case "measure":
		return measure.Main, true
	case "policy":
		return policy.Main, true
	case "image":
		return image.Exec, true
	}
	return nil, false
}

func main() {
	ctx := context.Background()
	if len(os.Args) > 1 {
		switch arg := os.Args[1]; arg {
		case "-v", "--v", "-version", "--version":
			version.Print(os.Stdout)
			return
		default:
			if run, ok := subcommand(arg); ok {
				os.Exit(run(ctx, os.Args[2:], os.Stdout, os.Stderr))
			}
		}
	}
	if gone, why := manager.Abandoned(os.Getenv); gone {
		fmt.Fprintln(os.Stderr, version.RuntimeName+": "+why)
		os.Exit(1)
	}
	plugin.Register(pod.Deps{
		Factory:    sandbox.New,
		LoadConfig: configs.Select,
		Getenv:     os.Getenv,
	})
	shim.RunShim(ctx, manager.New(version.RuntimeName, manager.Config{
		Cleanup: sandbox.Cleanup,
		Getenv:  os.Getenv,
	}), noReaper)
}

// noReaper leaves child processes to their owners: the sandbox waits for its
// VMM and helpers with os/exec, which a global SIGCHLD reaper would race.
func noReaper(c *shim.Config) {
	c.NoReaper = true
	c.NoSubreaper = true
}
