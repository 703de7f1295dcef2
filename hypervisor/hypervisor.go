// Package hypervisor is the VM abstraction: one VM per pod, started from a
// resolved Config by a driver (qemu, clh). Drivers know VMMs and TEEs; they
// know nothing of containers.
package hypervisor

import (
	"context"
	"net"
	"os"
	"time"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// VM is one confidential VM.
//
// Lifecycle: New (nothing runs yet; config errors surface here) → Start
// (VMM process up, guest booting) → Dial (agent reachable) → Stop (graceful
// power-down, then kill at the deadline; idempotent) → Wait returns. After
// Stop returns, nothing the VM owned is left: no VMM or helper process, no
// socket, no state directory.
//
// Errors: Start on a started VM returns errdefs.ErrFailedPrecondition; Dial on
// a VM that is not running returns errdefs.ErrFailedPrecondition.
type VM interface {
	// Start launches the VMM and boots the guest. It does not wait for the agent.
	Start(ctx context.Context) error
	// Dial connects to a vsock port of the guest, retrying until ctx is done.
	// The error names what was dialled, for how long, and ends with the
	// console tail.
	Dial(ctx context.Context, port uint32) (net.Conn, error)
	// Stop powers the guest down, kills the VMM at ctx's deadline, and
	// removes everything the VM created on the host.
	Stop(ctx context.Context) error
	// Wait blocks until the VMM process has exited and says why.
	Wait(ctx context.Context) (ExitStatus, error)
	// Info describes the running VM.
	Info() Info
}

// DiskHotplugger is implemented by VMs that can attach block devices while
// running (used for container root filesystems).
type DiskHotplugger interface {
	// AddDisk attaches a read-only or writable disk; the guest finds it by Serial.
	AddDisk(ctx context.Context, d Disk) error
	// RemoveDisk detaches a disk added with AddDisk. Unknown IDs are errdefs.ErrNotFound.
	RemoveDisk(ctx context.Context, id string) error
}

// GuestListener is implemented by VMs whose guest can open connections to
// the host. The agent announces itself on such a connection, so the host
// does not have to knock on a port the guest cannot answer yet.
type GuestListener interface {
	// ListenGuest accepts the connections the guest opens to host port
	// port. errdefs.ErrNotImplemented means this VM's transport has no
	// per-VM host side (kernel vhost-vsock shares one host port space).
	ListenGuest(port uint32) (net.Listener, error)
}

// NICAttacher is implemented by VMs that take network interfaces at boot.
type NICAttacher interface {
	// AttachNICs adds NICs to a VM that has not started (else
	// errdefs.ErrFailedPrecondition); Start brings them up with the guest.
	// The caller keeps its Tap files and may close them once Start returned.
	AttachNICs(nics []NIC) error
}

// Quitter is implemented by VMs that can end at once, without the guest's
// own shutdown: for a guest with nothing left to save (its agent answered
// DestroySandbox; guest memory is all it had). Stop must still be called to
// release the rest.
type Quitter interface {
	Quit(ctx context.Context) error
}

// Commander is implemented by drivers that can show what they would launch
// without launching it (the `vm-command` subcommand).
type Commander interface {
	// Command returns the VMM argv (QEMU) or request body (Cloud Hypervisor),
	// plus notes for the user (e.g. "init-data digest not bound: SE has no field").
	Command() (lines []string, notes []string, err error)
}

// DisksParam is the guest kernel parameter with which a driver lists the
// IDs of the disks attached at boot of a VM without a TEE
// ("coco.disks=coco-tools,initdata"), so that its agent waits for the disk
// driver only when a disk it reads early is there. TEE VMs do not get it:
// their guests do not trust the host's word, and a per-pod list would
// change the measured command line.
const DisksParam = "coco.disks"

// Disk is a block device given to the guest.
type Disk struct {
	ID       string // unique within the VM; also the device serial the guest sees
	Path     string // host file
	ReadOnly bool
	Format   string // "raw" (default)
	// Shared: other users may write the file or device at the same time
	// (a host block device several containers of a pod are given); the
	// VMM does not lock it for itself.
	Shared bool
}

// NIC is a network interface of the VM backed by a tap device the host
// opened (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), typically in the pod's network
// namespace, which the VMM process need not be in.
type NIC struct {
	ID  string   // unique within the VM: [A-Za-z0-9_-]{1,16}
	Tap *os.File `json:"-"` // one open queue of the tap; the VMM gets a copy
	MAC net.HardwareAddr
	MTU int // 68-65535; 0 leaves the device's default
}

// Info describes a running VM.
type Info struct {
	PID        int    // VMM process
	ConsoleLog string // guest serial console log
	HelperLog  string // the per-VM helper's log (vhost-device-vsock); "" without one
	StateDir   string
	Accel      string // "kvm" or "tcg"
	// Launch is when Start reached each host step (zero where a driver
	// does not say): what a pod start pays on the host before the guest runs.
	Launch LaunchTimes
}

// LaunchTimes are the instants of a VMM's launch that only its driver sees.
type LaunchTimes struct {
	HelperStart time.Time // a per-VM helper (vhost-device-vsock) exec'd; zero without one
	HelperReady time.Time // its socket is up
	Exec        time.Time // the VMM exec'd
	// MonitorReady: the VMM answers on its control socket (QMP, the API):
	// its own set-up (devices, kernel and initrd loaded) is done and the
	// guest's first instructions run.
	MonitorReady time.Time
}

// ExitStatus says why the VMM exited.
type ExitStatus struct {
	Code     int
	Reason   string // e.g. "guest powered off", "killed by signal 9", "guest panicked"
	ExitedAt time.Time
}

// Config is a fully resolved VM description. configs/ builds it from TOML.
type Config struct {
	ID       string // pod (sandbox) id
	StateDir string // per-VM directory the driver owns; removed by Stop

	Driver string // "qemu" or "clh"
	Path   string // VMM binary

	Machine   string // qemu machine type: q35, microvm, pseries, s390-ccw-virtio
	Accel     string // "auto", "kvm" or "tcg"
	CPUModel  string
	VCPUs     uint32
	MemoryMiB uint32

	Kernel       string
	Initrd       string
	Firmware     string // -bios / payload.firmware; empty for direct kernel boot
	IGVM         string // Cloud Hypervisor SNP
	KernelParams string

	TEE tee.Config
	// LaunchData is the init-data digest already fitted to the TEE's field
	// (tee.Kind.LaunchDataSize); nil when the pod has no init-data.
	LaunchData []byte

	Vsock Vsock
	// Disks are attached at boot (e.g. the init-data image).
	Disks []Disk
	// NICs are attached at boot (see NICAttacher).
	NICs []NIC

	// BootTimeout bounds Dial during boot.
	BootTimeout time.Duration
	// ConsoleLogMax caps the guest console log (Info.ConsoleLog) in bytes;
	// the newest output is kept (see Console). 0 = DefaultConsoleLogMax.
	ConsoleLogMax int64
	// MemoryHugePages backs guest memory with transparent huge pages where
	// the driver shares it with a vsock daemon (QEMU, vhost-user mode) and
	// the guest is not confidential; elsewhere it changes nothing.
	MemoryHugePages bool
}

// Vsock selects how the host reaches the guest agent.
type Vsock struct {
	// Mode is "auto" (vhost-vsock when /dev/vhost-vsock exists, else
	// vhost-user), "vhost" or "vhost-user". Cloud Hypervisor always uses its
	// own hybrid vsock.
	Mode string
	// DaemonPath is the vhost-device-vsock binary for vhost-user mode;
	// empty: the shim serves the vhost-user device itself.
	DaemonPath string
}
