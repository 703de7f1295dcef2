//go:build integration

package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Restart stops containerd (SIGTERM, as a service manager does for an
// upgrade) and starts it again with the same config and environment. Shims
// and their pods keep running meanwhile; containerd must reconnect to them.
func (c *Containerd) Restart(ctx context.Context) error {
	if c.cmd == nil || c.cmd.Process == nil {
		return fmt.Errorf("harness: restart: containerd was not started by this process")
	}
	if c.CRI != nil {
		c.CRI.Close()
		c.CRI = nil
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("harness: restart: containerd did not exit within 30s of SIGTERM")
	}
	logFile, err := os.OpenFile(c.LogPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(c.cmd.Path, c.cmd.Args[1:]...)
	cmd.Env = c.cmd.Env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("harness: restart containerd: %w", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(c.exited) }()
	if err := c.saveState(false); err != nil {
		return err
	}
	return c.waitServing(ctx, time.Minute)
}
