//go:build integration

package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// stateFile records a background containerd so a later process can stop it.
const stateFile = "harness.json"

type savedState struct {
	PID    int      `json:"pid"`
	Bridge string   `json:"bridge"`
	Bins   Binaries `json:"bins"`
	// Owner is the process that started containerd; when it is gone and
	// the instance was not detached, the instance is stale (a test binary
	// killed by its -timeout never reaches its teardown).
	Owner    int  `json:"owner"`
	Detached bool `json:"detached"`
}

func (c *Containerd) saveState(detached bool) error {
	b, err := json.Marshal(savedState{PID: c.PID(), Bridge: c.bridge, Bins: c.Bins, Owner: os.Getpid(), Detached: detached})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Root, stateFile), b, 0o644)
}

// Detach records this containerd under Root and lets it run on after this
// process exits (`make dev-containerd`); Attach + Stop end it.
func (c *Containerd) Detach() error {
	if err := c.saveState(true); err != nil {
		return err
	}
	if c.CRI != nil {
		c.CRI.Close()
		c.CRI = nil
	}
	c.cmd.Process.Release()
	return nil
}

// Attach finds the containerd a Detach recorded under root.
func Attach(ctx context.Context, root string) (*Containerd, error) {
	b, err := os.ReadFile(filepath.Join(root, stateFile))
	if err != nil {
		return nil, fmt.Errorf("harness: no background containerd recorded in %s: %w", root, err)
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("harness: %s: %w", filepath.Join(root, stateFile), err)
	}
	c := &Containerd{
		Root:    root,
		Address: filepath.Join(root, "containerd.sock"),
		LogPath: filepath.Join(root, "containerd.log"),
		Bins:    st.Bins,
		bridge:  st.Bridge,
		pid:     st.PID,
		logf:    func(string, ...any) {},
	}
	if isContainerd(c.pid, root) {
		if cri, err := DialCRI(c.Address); err == nil {
			c.CRI = cri
		}
	}
	return c, nil
}

// CleanStale stops and removes the harness instances under the temp dir whose
// owner died without tearing them down. Only instances this harness recorded
// (a harness.json in a coco-it-* dir) are touched.
func CleanStale(ctx context.Context, logf Logf) {
	// A dead run's kubelet first, before it can act on the containerd below;
	// its cgroups last, once that containerd's pods have left them.
	cgroups := cleanStaleKube(logf)
	defer func() {
		for _, cg := range cgroups {
			removeCgroups(cg)
		}
	}()
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "coco-it-*", stateFile))
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var st savedState
		if json.Unmarshal(b, &st) != nil || st.Detached || st.Owner == 0 || syscall.Kill(st.Owner, 0) == nil {
			continue
		}
		root := filepath.Dir(f)
		logf("harness: cleaning up stale instance %s (owner %d is gone)", root, st.Owner)
		if c, err := Attach(ctx, root); err == nil {
			if err := c.Stop(ctx); err != nil {
				logf("harness: stale instance %s: %v", root, err)
			}
		}
	}
}

// isContainerd guards against signalling a recycled PID.
func isContainerd(pid int, root string) bool {
	cmd := cmdline(pid)
	return strings.Contains(cmd, "containerd") && strings.Contains(cmd, filepath.Join(root, "config.toml"))
}

func waitGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
			return true
		}
		// A zombie still answers kill(0); its argv is empty.
		if cmdline(pid) == "" {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}
