//go:build integration

package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kubeProc is one running component of the node, logging to a file.
type kubeProc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startKubeProc(name, logDir, bin string, args ...string) (*kubeProc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, as containerd: a Ctrl-C meant for `go test`
	// must not stop the kubelet before teardown has removed its pods.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: start %s: %w", name, err)
	}
	p := &kubeProc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	return p, nil
}

// logTail is the end of the component's log, for errors.
func (p *kubeProc) logTail(n int) string {
	b, _ := os.ReadFile(p.log)
	return tail(b, n)
}

// exitedErr says whether the process is gone, with its log tail.
func (p *kubeProc) exitedErr() error {
	select {
	case <-p.exited:
		return fmt.Errorf("harness: %s exited (%v); log tail:\n%s", p.name, p.cmd.ProcessState, p.logTail(4000))
	default:
		return nil
	}
}

// stop sends SIGTERM, then SIGKILL after limit.
func (p *kubeProc) stop(limit time.Duration) {
	if p == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(limit):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// freePort asks the kernel for an unused TCP port on ip. Another process
// could take it before the component binds it; the components fail loudly
// then ("address already in use"), which a rerun fixes.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// nodeIP is the host's address on its default-route interface (else the
// first up, non-loopback IPv4 address): the kubelet refuses a loopback node
// IP, and the API server reaches the kubelet (logs, exec) at this address.
func nodeIP() (string, error) {
	prefer := ""
	if f, err := os.Open("/proc/net/route"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 2 && fields[1] == "00000000" {
				prefer = fields[0]
				break
			}
		}
		f.Close()
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	var found []string
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || strings.HasPrefix(ifc.Name, "cocoit") {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil || !ipn.IP.IsGlobalUnicast() {
				continue
			}
			if ifc.Name == prefer {
				return ipn.IP.String(), nil
			}
			found = append(found, ipn.IP.String())
		}
	}
	if len(found) == 0 {
		return "", errors.New("harness: no non-loopback IPv4 address for the kubelet's node IP")
	}
	return found[0], nil
}

// kubeletSysctls are the kernel settings the kubelet sets at start
// (setupKernelTunables, unless protectKernelDefaults, which would refuse to
// start on a host that differs). The harness puts the host's values back.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func readSysctls() map[string]string {
	out := map[string]string{}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			out[k] = strings.TrimSpace(string(b))
		}
	}
	return out
}

// saveSysctls keeps the host's values in the instance root, so that a later
// run can restore them if this one is killed.
func saveSysctls(root string, saved map[string]string) error {
	var b strings.Builder
	for k, v := range saved {
		fmt.Fprintf(&b, "%s %s\n", k, v)
	}
	return os.WriteFile(filepath.Join(root, "sysctls"), []byte(b.String()), 0o644)
}

func readSavedSysctls(root string) map[string]string {
	out := map[string]string{}
	b, _ := os.ReadFile(filepath.Join(root, "sysctls"))
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			out[k] = v
		}
	}
	return out
}

func restoreSysctls(saved map[string]string) error {
	var errs []error
	for k, v := range saved {
		p := filepath.Join("/proc/sys", k)
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == v {
			continue
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("harness: restore sysctl %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the cgroup directory rel (the kubelet's cgroupRoot)
// with everything below it, in every mounted hierarchy (v1 has one per
// controller), deepest first; a cgroup still holding a task cannot go.
func removeCgroups(rel string) error {
	if rel == "" || rel == "/" {
		return nil
	}
	var errs []error
	for _, mnt := range cgroupMounts() {
		root := filepath.Join(mnt, rel)
		var dirs []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("harness: remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

func cgroupMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "... mountpoint opts - fstype source superopts"
		line := sc.Text()
		i := strings.Index(line, " - ")
		fields := strings.Fields(line)
		if i < 0 || len(fields) < 5 {
			continue
		}
		if fs := strings.Fields(line[i+3:]); len(fs) > 0 && (fs[0] == "cgroup" || fs[0] == "cgroup2") {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out
}

// kubeStatePrefix names the instance roots, so a later run finds the ones a
// killed test binary left (see cleanStaleKube).
const kubeStatePrefix = "coco-kube-"

// ownerFile in an instance root holds the test process's pid and the
// kubelet's cgroupRoot.
const ownerFile = "owner"

// cleanStaleKube tears down instances whose owning process is gone: their
// processes (whose argv names the root), mounts, kernel settings and files.
// It returns their cgroup roots, for the caller to remove once the stale
// containerd's pods are gone from them.
func cleanStaleKube(logf Logf) (cgroups []string) {
	roots, _ := filepath.Glob(filepath.Join(os.TempDir(), kubeStatePrefix+"*"))
	for _, root := range roots {
		b, err := os.ReadFile(filepath.Join(root, ownerFile))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(b))
		if len(fields) != 2 {
			continue
		}
		pid, _ := strconv.Atoi(fields[0])
		if pid > 0 && syscall.Kill(pid, 0) == nil {
			continue // its test is still running
		}
		logf("harness: cleaning up stale Kubernetes node %s", root)
		for _, p := range processesMentioning(root) {
			syscall.Kill(p, syscall.SIGKILL)
			waitGone(p, 5*time.Second)
		}
		unmountUnder(root)
		removeCgroups(fields[1])
		cgroups = append(cgroups, fields[1])
		restoreSysctls(readSavedSysctls(root))
		os.RemoveAll(root)
	}
	return cgroups
}

func killAndWait(pid int) {
	syscall.Kill(pid, syscall.SIGTERM)
	if !waitGone(pid, 5*time.Second) {
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
	}
}

// makeCgroups creates rel in every mounted cgroup hierarchy.
func makeCgroups(rel string) error {
	for _, mnt := range cgroupMounts() {
		if err := os.MkdirAll(filepath.Join(mnt, rel), 0o755); err != nil {
			return fmt.Errorf("harness: cgroup %s: %w", filepath.Join(mnt, rel), err)
		}
	}
	return nil
}
