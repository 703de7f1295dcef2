package spec

import (
	"bufio"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func devRule(allow bool, typ string, major, minor int64, access string) specs.LinuxDeviceCgroup {
	r := specs.LinuxDeviceCgroup{Allow: allow, Type: typ, Access: access}
	if major >= 0 {
		r.Major = ptr(major)
	}
	if minor >= 0 {
		r.Minor = ptr(minor)
	}
	return r
}

func deviceSpec(t *testing.T, caps []string, devices []specs.LinuxDevice, rules ...specs.LinuxDeviceCgroup) []byte {
	s := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"sh"}, Cwd: "/", Capabilities: &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}},
		Linux: &specs.Linux{Devices: devices, Resources: &specs.LinuxResources{
			Devices: append(append([]specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, DefaultDeviceRules...), rules...),
		}},
	}
	b, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func namesMajor(rules []specs.LinuxDeviceCgroup, typ string, major int64) bool {
	for _, r := range rules {
		if r.Allow && r.Type == typ && r.Major != nil && *r.Major == major {
			return true
		}
	}
	return false
}

// A hostile host gives a container CAP_MKNOD and device cgroup rules for
// the numbers of the guest's virtio-blk disks (254:0 is the first: the
// init-data disk or a rootfs), for every minor of that major and for a
// host device it also lists: none survives, the defaults and deny-all do.
func TestRewriteDropsHostDeviceRules(t *testing.T) {
	caps := []string{"CAP_MKNOD", "CAP_CHOWN"}
	raw := deviceSpec(t, caps, []specs.LinuxDevice{{Path: "/dev/vda", Type: "b", Major: 254, Minor: 0}},
		devRule(true, "b", 254, 0, "rwm"), devRule(true, "b", 254, -1, "rw"), devRule(true, "c", 10, 200, "rwm"), devRule(false, "c", 10, 200, "w"))
	res, err := Rewrite(raw, Options{ContainerID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	got := res.Spec.Linux.Resources.Devices
	if namesMajor(got, "b", 254) || namesMajor(got, "c", 10) {
		t.Fatalf("rules %+v still allow a device the container was not given", got)
	}
	want := append(append([]specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, DefaultDeviceRules...), devRule(false, "c", 10, 200, "w"))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rules %+v, want deny-all, the defaults and the deny rule", got)
	}
	if len(res.Spec.Linux.Devices) != 0 {
		t.Fatalf("devices %+v, want none", res.Spec.Linux.Devices)
	}
	if !slicesContainSub(res.Warnings, "b 254:0 rwm, b 254:* rw, c 10:200 rwm") {
		t.Fatalf("warnings %q do not name the dropped rules", res.Warnings)
	}
}

// A read-only block volume is 254:16 in the guest: a host rule naming it
// directly loses "w"; one naming the neighbouring disk is dropped.
func TestRewriteDeviceRulesOfBlockVolume(t *testing.T) {
	raw := deviceSpec(t, []string{"CAP_MKNOD"}, []specs.LinuxDevice{{Path: "/dev/xvda", Type: "b", Major: 7, Minor: 0}},
		devRule(true, "b", 7, 0, "rwm"), devRule(true, "b", 254, 16, "rwm"), devRule(true, "b", 254, 0, "rwm"))
	res, err := Rewrite(raw, Options{ContainerID: "c1", BlockDevs: map[string]GuestDevice{"/dev/xvda": {Major: 254, Minor: 16, ReadOnly: true}}})
	if err != nil {
		t.Fatal(err)
	}
	var blocks []specs.LinuxDeviceCgroup
	for _, r := range res.Spec.Linux.Resources.Devices {
		if r.Type == "b" {
			blocks = append(blocks, r)
		}
	}
	want := []specs.LinuxDeviceCgroup{devRule(true, "b", 254, 16, "rm"), devRule(true, "b", 254, 16, "rm")}
	if !reflect.DeepEqual(blocks, want) {
		t.Fatalf("block rules %+v, want the volume's 254:16 read-only twice and no 254:0", blocks)
	}
}

// Wildcards: mknod alone stays; read/write on every device only for a
// container with CAP_SYS_ADMIN (privileged: the guest's root anyway).
func TestRewriteWildcardDeviceRules(t *testing.T) {
	rules := []specs.LinuxDeviceCgroup{devRule(true, "c", -1, -1, "m"), devRule(true, "b", -1, -1, "m"), {Allow: true, Access: "rwm"}}
	res, err := Rewrite(deviceSpec(t, []string{"CAP_MKNOD"}, nil, rules...), Options{ContainerID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	got := res.Spec.Linux.Resources.Devices
	if n := len(got); n != 1+len(DefaultDeviceRules)+2 || !reflect.DeepEqual(got[n-2:], rules[:2]) {
		t.Fatalf("unprivileged rules %+v, want the mknod wildcards kept and allow-all dropped", got)
	}
	res, err = Rewrite(deviceSpec(t, []string{"CAP_SYS_ADMIN", "CAP_MKNOD"}, nil, rules...), Options{ContainerID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	got = res.Spec.Linux.Resources.Devices
	if !reflect.DeepEqual(got[len(got)-3:], rules) {
		t.Fatalf("privileged rules %+v, want all three wildcards kept", got)
	}
}

// The default policies allow the same default rules the guest keeps, so
// what the policy judges is what the container gets.
func TestDefaultDeviceRulesMatchPolicies(t *testing.T) {
	for _, f := range []string{"../../../configs/policies/default-tee.rego", "../../../virtcontainers/policy/genpolicy/pinned.rego"} {
		if got := regoDefaultRules(t, f); !reflect.DeepEqual(got, DefaultDeviceRules) {
			t.Errorf("%s: default_device_rules %+v, want %+v", f, got, DefaultDeviceRules)
		}
	}
}

func regoDefaultRules(t *testing.T, file string) []specs.LinuxDeviceCgroup {
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var out []specs.LinuxDeviceCgroup
	in := false
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "default_device_rules := ["):
			in = true
		case in && line == "]":
			return out
		case in:
			line, _, _ = strings.Cut(line, "#")
			var r specs.LinuxDeviceCgroup
			if err := json.Unmarshal([]byte(strings.TrimSuffix(strings.TrimSpace(line), ",")), &r); err != nil {
				t.Fatalf("%s: %q: %v", file, line, err)
			}
			out = append(out, r)
		}
	}
	t.Fatalf("%s: no default_device_rules list", file)
	return nil
}

func slicesContainSub(l []string, sub string) bool {
	for _, s := range l {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// A hostile host's UpdateTask allows the guest's disks (crun would apply
// an update's device rules): the update's device rules are taken out, the
// rest goes through; an update without them is passed as it came.
func TestKeepDeviceRules(t *testing.T) {
	update, _ := json.Marshal(&specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, charRule(1, 3), devRule(true, "b", 254, 0, "rwm"), {Allow: true, Access: "rwm"}},
		Pids:    &specs.LinuxPids{Limit: ptr(100)},
	})
	out, changed, err := KeepDeviceRules(update)
	if err != nil || !changed || string(out) != `{"pids":{"limit":100}}` {
		t.Fatalf("update became %s, %v, %v; want only the pids limit", out, changed, err)
	}
	plain := []byte(`{"memory":{"limit":1048576}}`)
	if out, changed, err := KeepDeviceRules(plain); err != nil || changed || string(out) != string(plain) {
		t.Fatalf("an update without device rules became %s, %v, %v", out, changed, err)
	}
}
