//go:build integration

package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Census counts what one containerd instance and its pods hold on the host:
// the leak tests take one before and one after and compare. Only what is
// ours is counted, so that other containerd instances on the machine (other
// test runs) do not show up: shims name our socket in their argv, and a pod
// id is ours when our containerd's log names it.
type Census struct {
	Shims       []int    // shim processes naming our containerd socket
	VMMs        []int    // QEMU / Cloud Hypervisor of our pods (orphans too)
	VsockDaemon []int    // vhost-device-vsock of our pods (orphans too)
	PodDirs     []string // /run/coco/<id> of our pods
	Mounts      []string // mount points under Root (rootfs, shm, netns)
	ShimSockets []string // entries of the shims' socket dir
	BridgePorts []string // veths on our CNI bridge (one per pod network)
	Loops       []string // loop devices backed by files of ours
	// ContainerdFDs and ShimFDs count open file descriptors (all shims summed).
	ContainerdFDs int
	ShimFDs       int
}

var podIDPattern = regexp.MustCompile(`/run/coco/([0-9a-f]{64})`)

// Census takes a census of this instance.
func (c *Containerd) Census() Census {
	var out Census
	log, _ := os.ReadFile(c.LogPath)
	ours := func(id string) bool { return strings.Contains(string(log), id) }
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmd := cmdline(pid)
		if cmd == "" {
			continue
		}
		argv0 := filepath.Base(strings.Fields(cmd)[0])
		switch {
		case strings.HasPrefix(argv0, "containerd-shim") && strings.Contains(cmd, c.Address):
			out.Shims = append(out.Shims, pid)
			out.ShimFDs += fdCount(pid)
		case strings.HasPrefix(argv0, "qemu-system") || argv0 == "cloud-hypervisor" || argv0 == "vhost-device-vsock":
			m := podIDPattern.FindStringSubmatch(cmd)
			if m == nil || !ours(m[1]) {
				continue
			}
			if argv0 == "vhost-device-vsock" {
				out.VsockDaemon = append(out.VsockDaemon, pid)
			} else {
				out.VMMs = append(out.VMMs, pid)
			}
		}
	}
	if pid := c.livePID(); pid > 0 {
		out.ContainerdFDs = fdCount(pid)
	}
	dirs, _ := os.ReadDir(CocoRunDir)
	for _, d := range dirs {
		if len(d.Name()) == 64 && ours(d.Name()) {
			out.PodDirs = append(out.PodDirs, filepath.Join(CocoRunDir, d.Name()))
		}
	}
	for _, m := range mountPoints() {
		if strings.HasPrefix(m, c.Root+"/") {
			out.Mounts = append(out.Mounts, m)
		}
	}
	socks, _ := os.ReadDir(filepath.Join(c.Root, "s"))
	for _, s := range socks {
		out.ShimSockets = append(out.ShimSockets, s.Name())
	}
	if c.bridge != "" {
		ports, _ := os.ReadDir(filepath.Join("/sys/class/net", c.bridge, "brif"))
		for _, p := range ports {
			out.BridgePorts = append(out.BridgePorts, p.Name())
		}
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, l := range loops {
		b, _ := os.ReadFile(l)
		f := strings.TrimSpace(string(b))
		if strings.HasPrefix(f, c.Root+"/") || (strings.HasPrefix(f, CocoRunDir+"/") && ours(f)) {
			out.Loops = append(out.Loops, f)
		}
	}
	for _, l := range [][]string{out.PodDirs, out.Mounts, out.ShimSockets, out.BridgePorts, out.Loops} {
		sort.Strings(l)
	}
	return out
}

// livePID is containerd's pid, whether started or attached.
func (c *Containerd) livePID() int {
	if p := c.PID(); p > 0 {
		return p
	}
	return c.pid
}

// FDCount is how many fds a process has open (0 once it is gone).
func FDCount(pid int) int { return fdCount(pid) }

func fdCount(pid int) int {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds)
}

// String is one line per kind: counts, and what there is when few.
func (s Census) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "shims %d (fds %d), VMMs %d, vsock daemons %d, pod dirs %d, mounts %d, shim sockets %d, bridge ports %d, loops %d, containerd fds %d",
		len(s.Shims), s.ShimFDs, len(s.VMMs), len(s.VsockDaemon), len(s.PodDirs), len(s.Mounts), len(s.ShimSockets), len(s.BridgePorts), len(s.Loops), s.ContainerdFDs)
	return b.String()
}

// Grown lists what after holds beyond before, naming the processes, paths
// and devices; fdSlack is how many more containerd fds are not a leak (its
// gRPC connections and log files come and go).
func (s Census) Grown(after Census, fdSlack int) []string {
	var out []string
	procs := func(kind string, b, a []int) {
		if len(a) > len(b) {
			for _, pid := range a {
				out = append(out, fmt.Sprintf("%s %d: %s", kind, pid, cmdline(pid)))
			}
		}
	}
	paths := func(kind string, b, a []string) {
		had := map[string]bool{}
		for _, p := range b {
			had[p] = true
		}
		for _, p := range a {
			if !had[p] {
				out = append(out, kind+" "+p)
			}
		}
	}
	procs("shim", s.Shims, after.Shims)
	procs("VMM", s.VMMs, after.VMMs)
	procs("vsock daemon", s.VsockDaemon, after.VsockDaemon)
	paths("pod state dir", s.PodDirs, after.PodDirs)
	paths("mount", s.Mounts, after.Mounts)
	paths("shim socket", s.ShimSockets, after.ShimSockets)
	paths("bridge port", s.BridgePorts, after.BridgePorts)
	paths("loop device backed by", s.Loops, after.Loops)
	if after.ContainerdFDs > s.ContainerdFDs+fdSlack {
		out = append(out, fmt.Sprintf("containerd fds %d → %d", s.ContainerdFDs, after.ContainerdFDs))
	}
	if len(after.Shims) <= len(s.Shims) && after.ShimFDs > s.ShimFDs+fdSlack {
		out = append(out, fmt.Sprintf("shim fds %d → %d", s.ShimFDs, after.ShimFDs))
	}
	return out
}
