//go:build integration

package harness

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// CocoRunDir is where our shim keeps per-sandbox runtime state (sockets,
// console log, QMP); nothing of a removed pod may remain there.
const CocoRunDir = "/run/coco"

// Leftovers lists what remains of the pod/containers ids after removal:
// processes whose argv names an id (shim, QEMU, vhost-device-vsock), mounts
// naming an id, state directories and shim sockets. Empty means clean.
func (c *Containerd) Leftovers(ids ...string) []string {
	var out []string
	for _, id := range ids {
		if id == "" {
			continue
		}
		for _, pid := range processesMentioning(id) {
			out = append(out, fmt.Sprintf("process %d: %s", pid, cmdline(pid)))
		}
		for _, m := range mountsMentioning(id) {
			out = append(out, "mount "+m)
		}
		for _, p := range []string{
			filepath.Join(CocoRunDir, id),
			filepath.Join(c.Root, "state", "io.containerd.runtime.v2.task", "k8s.io", id),
			filepath.Join(c.Root, "state", "io.containerd.grpc.v1.cri", "sandboxes", id),
			filepath.Join(c.Root, "state", "io.containerd.grpc.v1.cri", "containers", id),
		} {
			if _, err := os.Stat(p); err == nil {
				out = append(out, "directory "+p)
			}
		}
		// The shim's socket, in the socket_dir we configure or in containerd's
		// default dir if a shim ignores the socket_dir it is given.
		sum := fmt.Sprintf("%x", sha256.Sum256([]byte(filepath.Join(c.Address, "k8s.io", id))))
		for _, dir := range []string{filepath.Join(c.Root, "s"), "/run/containerd/s"} {
			if _, err := os.Lstat(filepath.Join(dir, sum)); err == nil {
				out = append(out, "shim socket "+filepath.Join(dir, sum))
			}
		}
	}
	return out
}

// processesMentioning lists processes (not this one) whose argv contains s.
func processesMentioning(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if strings.Contains(cmdline(pid), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ProcessesMentioning is processesMentioning for tests (find QEMU of a pod).
func ProcessesMentioning(s string) []int { return processesMentioning(s) }

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
}

// Cmdline is a process's argv joined by spaces ("" once it is gone).
func Cmdline(pid int) string { return cmdline(pid) }

func mountPoints() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out
}

func mountsMentioning(s string) []string {
	var out []string
	for _, m := range mountPoints() {
		if strings.Contains(m, s) {
			out = append(out, m)
		}
	}
	return out
}

// unmountUnder lazily unmounts everything below root, deepest first.
func unmountUnder(root string) error {
	var under []string
	for _, m := range mountPoints() {
		if m == root || strings.HasPrefix(m, root+"/") {
			under = append(under, m)
		}
	}
	sort.Slice(under, func(i, j int) bool { return len(under[i]) > len(under[j]) })
	var errs []error
	for _, m := range under {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("harness: unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
