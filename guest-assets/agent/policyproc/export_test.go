package policyproc

import (
	"os/exec"

	runc "github.com/containerd/go-runc"
)

// testReaper stands in for containerd's reaper outside PID 1.
type testReaper struct{}

func (testReaper) Start(c *exec.Cmd) (chan runc.Exit, error) {
	if err := c.Start(); err != nil {
		return nil, err
	}
	ch := make(chan runc.Exit, 1)
	go func() {
		c.Wait()
		ch <- runc.Exit{Pid: c.Process.Pid, Status: c.ProcessState.ExitCode()}
	}()
	return ch, nil
}

func (testReaper) Wait(_ *exec.Cmd, ch chan runc.Exit) (int, error) { return (<-ch).Status, nil }

// TestReaper is testReaper for the external tests.
type TestReaper = testReaper
