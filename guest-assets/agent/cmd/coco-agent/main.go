//go:build linux

// coco-agent is PID 1 of the pod VM: it prepares the guest, then serves
// containerd's task API and the coco agent API over vsock.
package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/log"
	"github.com/mdlayher/vsock"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/configs/policies"
	"github.com/coco-runtime/coco/guest-assets/agent/boot"
	"github.com/coco-runtime/coco/guest-assets/agent/cdh"
	"github.com/coco-runtime/coco/guest-assets/agent/container"
	"github.com/coco-runtime/coco/guest-assets/agent/network"
	"github.com/coco-runtime/coco/guest-assets/agent/pause"
	"github.com/coco-runtime/coco/guest-assets/agent/policy"
	"github.com/coco-runtime/coco/guest-assets/agent/policyproc"
	"github.com/coco-runtime/coco/guest-assets/agent/service"
	"github.com/coco-runtime/coco/guest-assets/agent/tools"
	"github.com/coco-runtime/coco/guest-assets/agent/trust"
	"github.com/coco-runtime/coco/guest-assets/kmod"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

// Version is set at build time (-X main.Version=...).
var Version = "dev"

// Guest paths.
const (
	runDir       = "/run/coco"
	bundleRoot   = runDir + "/bundles"
	ioDir        = runDir + "/io"
	shmDir       = runDir + "/shm"
	volumeRoot   = runDir + "/volumes"
	cgroupRoot   = "/sys/fs/cgroup"
	cgroupParent = "/coco"
	// The tools disk comes last: what the initrd carries wins.
	guestPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + tools.Dir
	// ociRuntime is the OCI runtime containerd's runc task service runs:
	// crun, a C program, where runc is a Go one that starts three times per
	// container (create, its init, start) at ~0.3-0.5 s of guest CPU each
	// under TCG (make bench: StartContainer 2.2 s with runc, 0.8 s with crun).
	ociRuntime = "crun"
)

func main() {
	start := boot.Boottime()
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "coco-agent: must run as PID 1 of the guest")
		os.Exit(2)
	}
	err := run(start)
	boot.PowerOff(fmt.Sprintf("fatal: %v", err))
}

func run(start uint64) error {
	if err := boot.SwitchRoot(); err != nil {
		return err
	}
	if err := boot.MountEarly(); err != nil {
		return err
	}
	boot.OpenConsole()
	if err := boot.MountConfigFS(); err != nil {
		log.L.WithError(err).Debug("no configfs-tsm reports")
	}
	os.Setenv("PATH", guestPath)
	logrus.SetOutput(os.Stderr)
	logrus.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: false})
	logrus.AddHook(boot.UptimeHook{})
	level := "info"
	var bootDisks []string // the disks the host says it attached (hypervisor.DisksParam)
	disksListed := false
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read the kernel command line: %w", err)
	}
	mode := trust.Detect("", string(cmdline))
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "coco.log="); ok {
			level = v
		}
		if v, ok := strings.CutPrefix(f, hypervisor.DisksParam+"="); ok {
			bootDisks, disksListed = strings.Split(v, ","), true
		}
	}
	if err := log.SetLevel(level); err != nil {
		log.L.WithError(err).Warn("coco.log")
	}
	// Modules load while the agent starts serving: the listener only needs
	// vsock's address family, and a connection can arrive as soon as the
	// virtio transport is up, before the disk and filesystem drivers.
	// Container preparation waits for all of them; a failure powers off.
	// The tools disk (crun and coco-policy when the initrd leaves them out)
	// is mounted once its drivers are in; crun and coco-policy wait for it.
	vsockReady, blockReady, driversReady := make(chan struct{}), make(chan struct{}), make(chan struct{})
	toolsDisk := tools.New()
	if mode.TEE {
		boot.Log("TEE guest (%s): default TEE policy, no tools disk, no containers unless the attestation report binds the init-data", mode.Why)
	}
	go func() {
		if err := loadModules(vsockReady, blockReady, mode.TEE); err != nil {
			boot.PowerOff(fmt.Sprintf("fatal: load kernel modules: %v", err))
		}
		log.L.Debugf("kernel modules loaded %.3fs after kernel start", float64(boot.Boottime())/1e9)
		close(driversReady)
		mountTools(toolsDisk, mode)
		// Not on this thread: its nice 19 would hold the warm-up behind
		// the PrepareContainer it is meant to run beside.
		go warmRuntime(context.Background(), cgroupRoot+cgroupParent,
			func(ctx context.Context) error { return toolsDisk.Wait(ctx, ociRuntime) },
			func() error { return runVersion(ociRuntime) })
	}()
	if err := boot.EnableControllers(cgroupRoot); err != nil {
		log.L.WithError(err).Warn("cgroup controllers")
	}
	for _, d := range []string{bundleRoot, ioDir, shmDir, "/run/containerd/runc", "/etc"} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
	}
	if err := unix.Mount("shm", shmDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("pod shm: %w", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reap(ctx)

	destroyed := make(chan string, 1)
	// The Rego engine is a process of its own, started by the first policy
	// that needs compiling (the coco-dev default is allow-all, in Go).
	engine := policyproc.New(reaper.Default, policyproc.Name).StartAfter(func() error {
		ctx, cancel := context.WithTimeout(ctx, policyproc.DefaultTimeout)
		defer cancel()
		return toolsDisk.Wait(ctx, policyproc.Name)
	})
	defer engine.Close()
	// The attestation client exists once the owner's init-data is in
	// force; the workload API and sealed secrets wait for it.
	broker := cdh.NewPending()
	a, err := service.New(ctx, service.Config{
		Version: Version,
		StartNs: start,
		Now:     boot.Boottime,
		Policy:  defaultPolicy(engine, mode),
		TEE:     mode.TEE,
		CompilePolicy: func(text string) (policy.Policy, error) {
			p, err := engine.Compile(text)
			if err != nil {
				return nil, err // not a nil *Rego inside a non-nil Policy
			}
			return p, nil
		},
		Guest:       boot.Guest{},
		NativePause: true,
		Runtime:     ociRuntime,
		WaitRuntime: func(ctx context.Context) error { return toolsDisk.Wait(ctx, ociRuntime) },
		CgroupRoot:  cgroupRoot,
		Containers: container.Config{
			BundleRoot:   bundleRoot,
			ShmDir:       shmDir,
			VolumeRoot:   volumeRoot,
			CgroupParent: cgroupParent,
			PauseBinary:  pause.GuestPath,
			DriversReady: driversReady,
			Unseal:       broker.Unseal,
			PullImage:    (&guestImages{owner: broker, drivers: driversReady}).pull,
		},
		IODir:     ioDir,
		OnDestroy: func(reason string) { destroyed <- reason },
		Owner: func(ctx context.Context) (_ string, err error) {
			res := &initdata.GuestResult{}
			defer func() {
				if err != nil {
					broker.Set(nil, err)
					return
				}
				a, aerr := cdh.Attester(res.TEE, mode.TEE)
				if aerr != nil {
					broker.Set(nil, aerr)
					return
				}
				broker.Set(cdh.NewOwned(res.InitData, a))
			}()
			// The init-data disk needs the virtio-blk driver. A plain VM
			// without one (none listed by its host, or no virtio disk at
			// all) is not scanned: reading the other disks' first blocks is
			// ~30-80 ms of SetupSandbox under TCG, and whether the driver
			// had come up by then would decide what the scan saw. A TEE
			// guest always looks, and always checks its report.
			if !mode.TEE && !initDataDiskPossible(bootDisks, disksListed) {
				log.G(ctx).Info("no init-data disk attached")
				return "", nil
			}
			select {
			case <-blockReady:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			res, err = initdata.LoadInGuest(initdata.GuestOptions{Strict: mode.TEE, Report: trust.Report})
			if err != nil && mode.TEE {
				return "", fmt.Errorf("TEE guest (%s): %w", mode.Why, err)
			}
			if err != nil {
				return "", err
			}
			if res.TEE != "" {
				log.G(ctx).Infof("init-data binding checked against the %s attestation report", res.TEE)
			}
			if res.InitData != nil {
				log.G(ctx).WithField("device", res.Device).Infof("init-data loaded into %s", initdata.GuestDir)
				logInitDataFiles(ctx)
			}
			if res.Note != "" {
				log.G(ctx).Info(res.Note)
			}
			return res.Policy, nil
		},
	})
	if err != nil {
		return err
	}
	agentL, err := listen(ctx, api.AgentPort, vsockReady)
	if err != nil {
		return err
	}
	streamL, err := listen(ctx, api.StreamPort, vsockReady)
	if err != nil {
		return err
	}
	forwardL, err := listen(ctx, api.PortForwardPort, vsockReady)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, agentL, streamL) }()
	go serveWorkloadAPI(ctx, cdh.New(broker.Get, a.JudgeWorkload, Version))
	go func() {
		if err := a.ServePortForward(ctx, forwardL); err != nil {
			log.G(ctx).WithError(err).Error("port-forward listener")
		}
	}()
	boot.Log("serving on vsock ports %d, %d and %d, %.3fs after kernel start", api.AgentPort, api.StreamPort, api.PortForwardPort, float64(boot.Boottime())/1e9)
	go func() {
		if c := announceReady(ctx); c != nil {
			a.ServeConn(ctx, c)
		}
	}()
	// vCPUs the kernel left offline (maxcpus=1 under TCG) come up now,
	// while the host connects, instead of before init: boot.OnlineCPUs.
	go onlineCPUs()

	select {
	case reason := <-destroyed:
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		a.Close(sctx)
		scancel()
		streamL.Close()
		forwardL.Close()
		boot.PowerOff(reason)
		return nil
	case err := <-served:
		return fmt.Errorf("ttrpc server stopped: %w", err)
	}
}

// onlineCPUs brings the offline vCPUs up at the lowest CPU priority: the
// work cpu_up leaves on this vCPU (the new CPU's kernel threads) then
// waits behind the agent's answers.
func onlineCPUs() {
	// nice is per thread; this one is discarded with the goroutine.
	runtime.LockOSThread()
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, 19); err != nil {
		log.L.WithError(err).Debug("lower the CPU onliner's priority")
	}
	cpus, err := boot.OnlineCPUs(boot.SysCPU)
	if err != nil {
		log.L.WithError(err).Warn("vCPUs left offline")
	}
	if len(cpus) > 0 {
		log.L.Debugf("vCPUs %v online %.3fs after kernel start", cpus, float64(boot.Boottime())/1e9)
	}
}

// loadModules loads the manifest's modules: what the vsock listener needs
// first, then the block driver (init-data is read at SetupSandbox), then
// the rest (filesystems, network, balloon) at the lowest CPU priority, so
// that work fills the time the guest waits for the host rather than
// delaying the agent's answers.
func loadModules(vsockReady, blockReady chan<- struct{}, tee bool) error {
	mods, err := kmod.ReadManifest(kmod.DefaultManifest)
	if err != nil {
		return err
	}
	teeMods, mods := kmod.Take(mods, teeModules...)
	// The scratch disk's are loaded by the first guest pull that uses it.
	_, mods = kmod.Take(mods, scratchModules...)
	vsockMods, rest := kmod.Split(mods, "vmw_vsock_virtio_transport", "virtio_pci")
	blockMods, rest := kmod.Split(rest, "virtio_blk")
	// nice is per thread; this one is discarded with the goroutine.
	runtime.LockOSThread()
	if err := kmod.Load(vsockMods); err != nil {
		return err
	}
	close(vsockReady)
	log.L.Debugf("vsock modules loaded %.3fs after kernel start", float64(boot.Boottime())/1e9)
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, 19); err != nil {
		log.L.WithError(err).Debug("lower the module loader's priority")
	}
	if err := kmod.Load(blockMods); err != nil {
		return err
	}
	if tee {
		loadReportDrivers(teeMods)
	}
	close(blockReady)
	return kmod.Load(rest)
}

// listen opens a vsock listener once the vsock modules are loaded (the
// transport is up: the guest has a context ID), retrying briefly on errors.
func listen(ctx context.Context, port uint32, vsockReady <-chan struct{}) (*vsock.Listener, error) {
	deadline := time.Now().Add(5 * time.Second)
	select {
	case <-vsockReady:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Until(deadline)):
	}
	for {
		// Any local CID: the virtio transport may register after we listen.
		l, err := vsock.ListenContextID(unix.VMADDR_CID_ANY, port, nil)
		if err == nil {
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reap collects every exited child (PID 1 inherits all orphans) and hands
// the exits to containerd's reaper, which the runc task service listens to.
func reap(ctx context.Context) {
	sigs := make(chan os.Signal, 128)
	signal.Notify(sigs, unix.SIGCHLD)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
			if err := reaper.Reap(); err != nil {
				log.L.WithError(err).Debug("reap")
			}
		}
	}
}

// announceReady tells the host the agent serves: it connects to the host's
// ReadyPort and returns the connection, on which the agent then serves its
// API (the host needs no connection of its own). Hosts without a per-VM
// host side (kernel vhost-vsock) never accept; they dial AgentPort with
// retries instead, so giving up after a while (nil) is harmless.
func announceReady(ctx context.Context) net.Conn {
	deadline := time.Now().Add(15 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		c, err := vsock.Dial(vsock.Host, api.ReadyPort, nil)
		if err == nil {
			log.L.Debug("announced readiness to the host")
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// initDataDiskPossible says whether a plain VM may have an init-data disk:
// its host lists its boot disks on the command line.
func initDataDiskPossible(bootDisks []string, listed bool) bool {
	if listed {
		return slices.Contains(bootDisks, api.InitDataDiskSerial)
	}
	present, known := boot.HasVirtioBlockPCI()
	return present || !known
}

// teeModules are the report drivers only a TEE guest loads. Each fails
// with ENODEV in a guest without its TEE, which is no error: the binding
// check then finds no report source and says so.
var teeModules = []string{"sev_guest"}

func loadReportDrivers(mods []kmod.Module) {
	for _, m := range mods {
		if err := kmod.Load([]kmod.Module{m}); err != nil {
			log.L.WithError(err).Infof("report driver %s not loaded", m.Name())
		}
	}
}

// defaultPolicy is the policy before any is loaded: allow-all in a plain VM
// (coco-dev), but the default TEE policy in a TEE guest, so that a
// confidential pod without a policy of its own fails closed.
func defaultPolicy(engine *policyproc.Proc, mode trust.Mode) policy.Policy {
	if !mode.TEE {
		return policy.AllowAll{}
	}
	p, err := engine.Compile(policies.DefaultTEE)
	if err != nil {
		boot.PowerOff(fmt.Sprintf("fatal: built-in TEE policy: %v", err))
	}
	return p
}

// mountTools mounts the tools disk, except in a TEE guest: the host can
// change the disk, and a TEE guest runs only what its measured initrd
// carries (there crun and coco-policy must be in the initrd).
func mountTools(d *tools.Disk, mode trust.Mode) {
	if mode.TEE {
		d.Skip("a TEE guest runs only what its measured initrd carries")
		if boot.DiskBySerial("/sys/block", "/dev", api.ToolsDiskSerial) != "" {
			log.L.Warn("ignoring the tools disk: a TEE guest runs only what its measured initrd carries")
		}
		return
	}
	mounted, err := d.Mount("/sys/block", "/dev", api.ToolsDiskSerial, tools.Dir)
	if err != nil {
		log.L.WithError(err).Error("tools disk")
		return
	}
	if mounted {
		log.L.Debugf("tools disk mounted at %s %.3fs after kernel start", tools.Dir, float64(boot.Boottime())/1e9)
	}
}

// logInitDataFiles puts the sha256 of each published init-data file on the
// console, read back from where the guest components will read it: the pod
// owner (and the integration tests) can compare it with what was sent. The
// files hold configuration, not secrets; only their digests are logged.
func logInitDataFiles(ctx context.Context) {
	for _, name := range []string{"initdata.toml", "aa.toml", "cdh.toml"} {
		b, err := os.ReadFile(filepath.Join(initdata.GuestDir, name))
		if err != nil {
			continue
		}
		log.G(ctx).Infof("init-data file %s sha256:%x", name, sha256.Sum256(b))
	}
}

// serveWorkloadAPI serves the pod's workload API on the guest's loopback.
// Loopback is up from here on (SetupSandbox configures it again with the
// pod's network); the API is optional, so a failure is logged, not fatal.
func serveWorkloadAPI(ctx context.Context, hub *cdh.Hub) {
	if err := network.LoopbackUp(); err != nil {
		log.L.WithError(err).Warn("workload API: loopback")
	}
	l, err := net.Listen("tcp", cdh.Addr)
	if err != nil {
		log.L.WithError(err).Error("workload API: not served")
		return
	}
	if err := hub.Serve(ctx, l); err != nil {
		log.L.WithError(err).Error("workload API stopped")
	}
}
