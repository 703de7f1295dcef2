package spec

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultDeviceRules are the device cgroup rules kept whatever the host's
// devices were: those of containerd's WithDefaultUnixDevices, the devices
// every container's /dev has (null, random, full, tty, zero, urandom,
// console, pts, ptmx). The default policies (configs/policies/
// default-tee.rego, genpolicy's pinned.rego) allow the same list.
var DefaultDeviceRules = []specs.LinuxDeviceCgroup{
	charRule(1, 3),    // /dev/null
	charRule(1, 8),    // /dev/random
	charRule(1, 7),    // /dev/full
	charRule(5, 0),    // /dev/tty
	charRule(1, 5),    // /dev/zero
	charRule(1, 9),    // /dev/urandom
	charRule(5, 1),    // /dev/console
	charRule(136, -1), // /dev/pts/*
	charRule(5, 2),    // /dev/ptmx
}

func charRule(major, minor int64) specs.LinuxDeviceCgroup {
	r := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: ptr(major), Access: "rwm"}
	if minor >= 0 {
		r.Minor = ptr(minor)
	}
	return r
}

// filterDeviceRules makes linux.resources.devices allow no more than the
// container gets: the host's rules name host devices, and the same numbers
// in the guest are the guest's own (a virtio-blk disk: the init-data disk,
// another container's rootfs), which a container with CAP_MKNOD could
// reach. Kept: deny rules (they only take away), the default rules, rules
// for the devices of s.Linux.Devices (the guest's stand-ins, without "w"
// for a read-only one), mknod-only wildcards, and read/write wildcards for
// a container with CAP_SYS_ADMIN (a privileged container is the guest's
// root anyway). Every other allow rule is dropped.
func filterDeviceRules(s *specs.Spec, devs map[string]GuestDevice, warn func(string, ...any)) {
	if s.Linux.Resources == nil || len(s.Linux.Resources.Devices) == 0 {
		return
	}
	sysAdmin := s.Process.Capabilities != nil && slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
	readOnly := map[[2]int64]bool{}
	for _, g := range devs {
		readOnly[[2]int64{g.Major, g.Minor}] = g.ReadOnly
	}
	var out []specs.LinuxDeviceCgroup
	var dropped []string
	for _, r := range s.Linux.Resources.Devices {
		keep, ro := keepDeviceRule(r, s.Linux.Devices, readOnly, sysAdmin)
		if !keep {
			dropped = append(dropped, ruleString(r))
			continue
		}
		if ro {
			r.Access = strings.ReplaceAll(r.Access, "w", "")
		}
		out = append(out, r)
	}
	if len(dropped) > 0 {
		warn("linux.resources.devices: dropped allow rule(s) %s: no such device is given to the container in the guest", strings.Join(dropped, ", "))
	}
	s.Linux.Resources.Devices = out
}

// keepDeviceRule says whether rule r stays, and whether it names a
// read-only guest disk (so loses "w").
func keepDeviceRule(r specs.LinuxDeviceCgroup, devices []specs.LinuxDevice, readOnly map[[2]int64]bool, sysAdmin bool) (keep, ro bool) {
	if !r.Allow {
		return true, false
	}
	if r.Type == "" || r.Type == "a" || r.Major == nil {
		// A wildcard: mknod alone opens nothing.
		return sysAdmin || strings.Trim(r.Access, "m") == "", false
	}
	if slices.ContainsFunc(DefaultDeviceRules, func(d specs.LinuxDeviceCgroup) bool { return sameDevices(d, r) }) {
		return true, false
	}
	if r.Minor == nil {
		return false, false // every minor of a major: guest disks among them
	}
	for _, d := range devices {
		if d.Type == r.Type && d.Major == *r.Major && d.Minor == *r.Minor {
			return true, r.Type == "b" && readOnly[[2]int64{d.Major, d.Minor}]
		}
	}
	return false, false
}

// sameDevices: rule r covers the devices of default rule d and no more.
func sameDevices(d, r specs.LinuxDeviceCgroup) bool {
	if d.Type != r.Type || *d.Major != *r.Major || (d.Minor == nil) != (r.Minor == nil) {
		return false
	}
	return d.Minor == nil || *d.Minor == *r.Minor
}

func ruleString(r specs.LinuxDeviceCgroup) string {
	n := func(p *int64) string {
		if p == nil {
			return "*"
		}
		return fmt.Sprint(*p)
	}
	t := r.Type
	if t == "" {
		t = "a"
	}
	return fmt.Sprintf("%s %s:%s %s", t, n(r.Major), n(r.Minor), r.Access)
}

// KeepDeviceRules takes the device rules out of an UpdateTask's resources
// (OCI LinuxResources JSON): crun would replace the container's device
// cgroup with them, and they are the host's (containerd re-sends its
// spec's rules with every resource update, host device numbers included:
// a guest disk's in the guest, and not a block volume's guest disk). A
// container's device cgroup is the one PrepareContainer gave it; the CRI
// cannot change devices anyway. It returns the resources to apply and
// whether rules were taken out.
func KeepDeviceRules(resources []byte) ([]byte, bool, error) {
	var r specs.LinuxResources
	if err := json.Unmarshal(resources, &r); err != nil {
		return nil, false, invalid("resources", "%v", err)
	}
	if r.Devices == nil {
		return resources, false, nil
	}
	r.Devices = nil
	b, err := json.Marshal(&r)
	return b, true, err
}
