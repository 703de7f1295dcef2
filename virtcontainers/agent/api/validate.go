package api

import (
	"fmt"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

// Size bounds for host-supplied request fields. The guest rejects anything
// larger before parsing it; the host client checks the same bounds so that a
// user sees the error before the VM does.
const (
	MaxSpecBytes       = 1 << 20 // OCI spec (config.json)
	MaxPolicyBytes     = 1 << 20 // Rego text
	MaxDNSBytes        = 64 << 10
	MaxFiles           = 64
	MaxFileBytes       = 1 << 20
	MaxTotalFilesBytes = 2 << 20 // with the spec, stays under ttrpc's 4 MiB message limit
	MaxSysctls         = 256
	MaxSysctlValue     = 4096
	MaxHostname        = 64
)

// The name checks below are loops over byte classes rather than regular
// expressions: this package is linked into every shim (one process per pod)
// and into the agent, and the compiled {0,127} and {0,254} repetitions took
// about 360 KB of heap at package init, held for the life of the process.
// validate_test.go checks them against the patterns they implement.

// isAlnum reports whether c is in [a-zA-Z0-9].
func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// only reports whether every byte of s is in [a-zA-Z0-9] or in extra.
func only(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && strings.IndexByte(extra, s[i]) < 0 {
			return false
		}
	}
	return true
}

// isID: ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$
func isID(s string) bool {
	return len(s) >= 1 && len(s) <= 128 && isAlnum(s[0]) && only(s, "_.-")
}

// isSerial: ^[a-zA-Z0-9_-]{1,20}$
func isSerial(s string) bool {
	return len(s) >= 1 && len(s) <= 20 && only(s, "_-")
}

// isHostname: ^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$
func isHostname(s string) bool {
	return len(s) >= 1 && isAlnum(s[0]) && isAlnum(s[len(s)-1]) && only(s, ".-")
}

// isSysctlName: ^[a-zA-Z0-9_][a-zA-Z0-9_.\-/]{0,254}$
func isSysctlName(s string) bool {
	return len(s) >= 1 && len(s) <= 255 && (isAlnum(s[0]) || s[0] == '_') && only(s, "_.-/")
}

// invalid builds an InvalidArgument error that names the field.
func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// ValidateID checks a container, exec or sandbox id: 1-128 characters of
// [a-zA-Z0-9_.-], starting with a letter or digit (so it is always a safe
// single path element).
func ValidateID(field, id string) error {
	if !isID(id) {
		if len(id) > 40 {
			id = id[:40] + "..."
		}
		return invalid(field, "%q is not an id: want ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$", id)
	}
	return nil
}

// ValidateSerial checks a virtio-blk serial (at most 20 bytes).
func ValidateSerial(field, s string) error {
	if !isSerial(s) {
		return invalid(field, "%q is not a disk serial: want 1-20 of [a-zA-Z0-9_-]", s)
	}
	return nil
}

// ValidateAbsPath checks that p is absolute, clean and free of NUL bytes.
func ValidateAbsPath(field, p string) error {
	if p == "" || !path.IsAbs(p) || path.Clean(p) != p || strings.ContainsRune(p, 0) || len(p) > 4096 {
		return invalid(field, "%q must be a clean absolute path", p)
	}
	return nil
}

// Validate checks a SetupSandboxRequest.
func (r *SetupSandboxRequest) Validate() error {
	if err := ValidateID("sandbox_id", r.GetSandboxId()); err != nil {
		return err
	}
	if h := r.GetHostname(); h != "" && (len(h) > MaxHostname || !isHostname(h)) {
		return invalid("hostname", "%q is not a hostname (at most %d of [a-zA-Z0-9.-])", h, MaxHostname)
	}
	if len(r.GetDns()) > MaxDNSBytes || strings.ContainsRune(r.GetDns(), 0) {
		return invalid("dns", "resolv.conf content must be text of at most %d bytes", MaxDNSBytes)
	}
	if len(r.GetSysctls()) > MaxSysctls {
		return invalid("sysctls", "%d entries, at most %d", len(r.GetSysctls()), MaxSysctls)
	}
	for k, v := range r.GetSysctls() {
		if !isSysctlName(k) || strings.Contains(k, "..") || strings.Contains(k, "//") {
			return invalid("sysctls", "key %q is not a sysctl name", k)
		}
		if len(v) > MaxSysctlValue || strings.ContainsAny(v, "\x00\n") {
			return invalid("sysctls["+k+"]", "value must be one line of at most %d bytes", MaxSysctlValue)
		}
	}
	if len(r.GetPolicy()) > MaxPolicyBytes {
		return invalid("policy", "%d bytes, at most %d", len(r.GetPolicy()), MaxPolicyBytes)
	}
	return r.GetNetwork().Validate()
}

// Validate checks a PrepareContainerRequest's fields; the spec's content is
// checked where it is rewritten.
func (r *PrepareContainerRequest) Validate() error {
	if err := ValidateID("container_id", r.GetContainerId()); err != nil {
		return err
	}
	if n := len(r.GetSpec()); n == 0 || n > MaxSpecBytes {
		return invalid("spec", "%d bytes, want 1 to %d bytes of OCI runtime spec JSON", n, MaxSpecBytes)
	}
	switch src := r.GetRootfs().GetSource().(type) {
	case *Rootfs_Block:
		if err := ValidateSerial("rootfs.block.serial", src.Block.GetSerial()); err != nil {
			return err
		}
		if t := src.Block.GetFstype(); t != "" && t != "erofs" {
			return invalid("rootfs.block.fstype", "%q is not supported: want erofs", t)
		}
	case *Rootfs_GuestPull:
		if src.GuestPull.GetImage() == "" {
			return invalid("rootfs.guest_pull.image", "empty image reference")
		}
	case *Rootfs_Agent:
	default:
		return invalid("rootfs", "no source: want block, guest_pull or agent")
	}
	_, agentRootfs := r.GetRootfs().GetSource().(*Rootfs_Agent)
	if r.GetSandboxContainer() != agentRootfs {
		return invalid("rootfs", "the sandbox container and only it uses the agent rootfs (sandbox_container=%v)", r.GetSandboxContainer())
	}
	if err := validateDiskVolumes(r.GetDiskVolumes()); err != nil {
		return err
	}
	if err := validateBlockVolumes(r.GetBlockVolumes(), len(r.GetDiskVolumes())); err != nil {
		return err
	}
	return validateFiles("files", r.GetFiles(), "")
}

// validateFiles checks files sent for bind mounts: at most MaxFiles, clean
// absolute destinations given once (under under+"/" when under is set),
// bounded content, permission bits only.
func validateFiles(field string, files []*File, under string) error {
	if len(files) > MaxFiles {
		return invalid(field, "%d files, at most %d", len(files), MaxFiles)
	}
	total := 0
	seen := make(map[string]bool, len(files))
	for i, f := range files {
		field := fmt.Sprintf("%s[%d]", field, i)
		if err := ValidateAbsPath(field+".destination", f.GetDestination()); err != nil {
			return err
		}
		if under != "" && !strings.HasPrefix(f.GetDestination(), under+"/") {
			return invalid(field+".destination", "%q is not under the volume's destination %q", f.GetDestination(), under)
		}
		if seen[f.GetDestination()] {
			return invalid(field+".destination", "%q given twice", f.GetDestination())
		}
		seen[f.GetDestination()] = true
		if len(f.GetContent()) > MaxFileBytes {
			return invalid(field+".content", "%d bytes, at most %d", len(f.GetContent()), MaxFileBytes)
		}
		total += len(f.GetContent())
		if f.GetMode()&^0o777 != 0 {
			return invalid(field+".mode", "%#o has bits beyond 0777", f.GetMode())
		}
	}
	if total > MaxTotalFilesBytes {
		return invalid(field, "%d bytes in all, at most %d", total, MaxTotalFilesBytes)
	}
	return nil
}

// Validate checks an UpdateVolumeRequest: the same bounds as
// PrepareContainer's files, every file under the volume's destination.
// Whether the destination is a volume of that container is the guest's
// to check.
func (r *UpdateVolumeRequest) Validate() error {
	if err := ValidateID("container_id", r.GetContainerId()); err != nil {
		return err
	}
	if err := ValidateAbsPath("destination", r.GetDestination()); err != nil {
		return err
	}
	if r.GetDestination() == "/" {
		return invalid("destination", "a volume cannot be mounted at /")
	}
	return validateFiles("files", r.GetFiles(), r.GetDestination())
}

// MaxTerminationMessage is the most of a termination message the guest
// returns, as the kubelet reads at most 4096 bytes of one.
const MaxTerminationMessage = 4096

// Validate checks a ReadTerminationMessageRequest.
func (r *ReadTerminationMessageRequest) Validate() error {
	if err := ValidateID("container_id", r.GetContainerId()); err != nil {
		return err
	}
	return ValidateAbsPath("destination", r.GetDestination())
}

// Validate checks a SetPolicyRequest.
func (r *SetPolicyRequest) Validate() error {
	if len(r.GetPolicy()) > MaxPolicyBytes {
		return invalid("policy", "%d bytes, at most %d", len(r.GetPolicy()), MaxPolicyBytes)
	}
	return nil
}
