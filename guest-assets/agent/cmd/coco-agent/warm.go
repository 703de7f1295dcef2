//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/log"

	"github.com/coco-runtime/coco/guest-assets/agent/boot"
)

// warmRuntime does ahead of the first container what its crun create would
// otherwise pay for while StartContainer waits, at a time the guest mostly
// waits for the host (containerd's CreateContainer, the rootfs image): it
// makes the containers' parent cgroup with every controller delegated, as
// crun does at its first create, and runs the OCI runtime once, so that its
// binary is in the page cache and the guest's exec path has run. Under TCG
// the first create's exec of crun until its first instruction went from
// ~105 to ~14 ms and crun's own work from ~256 to ~188 ms (make bench,
// medians of 11 pods each). Failures are logged only: the first create then
// does the work itself.
func warmRuntime(ctx context.Context, cgroupDir string, waitRuntime func(context.Context) error, runOnce func() error) {
	start := time.Now()
	if err := os.Mkdir(cgroupDir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		log.G(ctx).WithError(err).Debug("warm-up: containers' parent cgroup")
	} else if err := boot.EnableControllers(cgroupDir); err != nil {
		log.G(ctx).WithError(err).Debug("warm-up: containers' parent cgroup")
	}
	if err := waitRuntime(ctx); err != nil {
		log.G(ctx).WithError(err).Debug("warm-up: no OCI runtime to run")
		return
	}
	if err := runOnce(); err != nil {
		log.G(ctx).WithError(err).Debug("warm-up: OCI runtime")
		return
	}
	log.G(ctx).Debugf("warm-up: cgroup and OCI runtime ready in %s", time.Since(start).Round(time.Millisecond))
}

// runVersion runs name --version through the reaper, whose SIGCHLD loop
// would otherwise take the exit status from exec.Cmd.Wait.
func runVersion(name string) error {
	cmd := exec.Command(name, "--version")
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return err
	}
	status, err := reaper.Default.Wait(cmd, ec)
	if err == nil && status != 0 {
		err = fmt.Errorf("%s --version: exit status %d", name, status)
	}
	return err
}
