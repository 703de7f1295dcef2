package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"

	"github.com/coco-runtime/coco/sandbox/network"
)

// state is what `containerd-shim-coco-v2 delete` needs to clean up after a
// shim that died: it is written before the VM starts and updated once the
// VMM has a pid.
type state struct {
	ID         string `json:"id"`
	VMStateDir string `json:"vm_state_dir"`
	VMPID      int    `json:"vm_pid,omitempty"`
	// NetNS is the pod's network namespace, where Cleanup removes what
	// sandbox/network put (the taps go with the VMM by themselves).
	NetNS string `json:"netns,omitempty"`
}

const stateFile = "sandbox.json"

func writeState(dir string, st state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

// Cleanup removes what a sandbox left in stateDir after its shim died: it
// kills every process whose command line names the state directory (the VMM
// and its vsock daemon), unmounts what is mounted under it and removes it.
// A missing stateDir is not an error.
func Cleanup(ctx context.Context, stateDir string) error {
	if _, err := os.Stat(stateDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	if err := killReferencing(ctx, stateDir); err != nil {
		errs = append(errs, err)
	}
	if b, err := os.ReadFile(filepath.Join(stateDir, stateFile)); err == nil {
		var st state
		if json.Unmarshal(b, &st) == nil && st.NetNS != "" {
			if err := (network.Netlink{}).Teardown(ctx, st.NetNS); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := mount.UnmountRecursive(stateDir, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(stateDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killReferencing SIGKILLs the processes whose argv mentions dir and waits
// (bounded by ctx) for them to go. Matching on the state directory instead
// of a saved pid cannot hit an unrelated process that re-used the pid.
func killReferencing(ctx context.Context, dir string) error {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), dir) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		for alive(pid) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("process %d still alive after SIGKILL: %w", pid, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// alive reports whether pid exists and is not a zombie waiting for a parent
// that is not us.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
