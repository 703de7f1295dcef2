package spec

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func usernsSpec(t *testing.T, uid, gid []specs.LinuxIDMapping, mountUID []specs.LinuxIDMapping) []byte {
	s := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"/pause"}, Cwd: "/"},
		Mounts:  []specs.Mount{{Destination: "/data", Type: "bind", Source: "/host/data", Options: []string{"rbind", "idmap"}, UIDMappings: mountUID, GIDMappings: mountUID}},
		Linux: &specs.Linux{
			Namespaces:  []specs.LinuxNamespace{{Type: specs.UserNamespace, Path: "/proc/1/ns/user"}, {Type: specs.PIDNamespace}},
			UIDMappings: uid,
			GIDMappings: gid,
		},
	}
	b, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func idm(c, h, n uint32) specs.LinuxIDMapping {
	return specs.LinuxIDMapping{ContainerID: c, HostID: h, Size: n}
}

// The pod's mappings as critest and the kubelet send them pass, and the
// rewritten spec makes the namespace from them.
func TestRewriteIDMappingsValid(t *testing.T) {
	m := []specs.LinuxIDMapping{idm(0, 1000, 100000)}
	res, err := Rewrite(usernsSpec(t, m, m, nil), Options{ContainerID: "c1", Sandbox: true})
	if err != nil {
		t.Fatal(err)
	}
	ns := res.UserNS()
	if ns == nil || ns.Path != "" || len(ns.UID) != 1 || ns.UID[0] != m[0] {
		t.Fatalf("user namespace %+v, want a new one from %+v", ns, m)
	}
	if id, ok := HostID(ns.UID, 0); !ok || id != 1000 {
		t.Fatalf("HostID(0) = %d, %v, want 1000", id, ok)
	}
	if _, ok := HostID(ns.UID, 100000); ok {
		t.Fatal("HostID(100000) mapped past the range")
	}
}

// A hostile host's mappings are refused naming the field: overlapping
// ranges on either side, a range past the 32-bit ids (wrapping), an
// empty range, too many ranges, mappings without a user namespace, and
// bad mappings on an id-mapped mount.
func TestRewriteIDMappingsHostile(t *testing.T) {
	ok := []specs.LinuxIDMapping{idm(0, 1000, 100000)}
	many := make([]specs.LinuxIDMapping, MaxIDMappings+1)
	for i := range many {
		many[i] = idm(uint32(i), uint32(1000+i), 1)
	}
	for _, tc := range []struct {
		name      string
		uid, gid  []specs.LinuxIDMapping
		mountUID  []specs.LinuxIDMapping
		noUserNS  bool
		wantField string
	}{
		{"container ids overlap", []specs.LinuxIDMapping{idm(0, 1000, 10), idm(5, 5000, 10)}, ok, nil, false, "linux.uidMappings[1].containerID"},
		{"host ids overlap", ok, []specs.LinuxIDMapping{idm(0, 1000, 10), idm(10, 1005, 10)}, nil, false, "linux.gidMappings[1].hostID"},
		{"host range wraps", []specs.LinuxIDMapping{idm(0, 0xffffff00, 0x200)}, ok, nil, false, "linux.uidMappings[0]"},
		{"container range reaches (uint32)-1", []specs.LinuxIDMapping{idm(0xfffffff0, 1000, 0x10)}, ok, nil, false, "linux.uidMappings[0]"},
		{"empty range", []specs.LinuxIDMapping{idm(0, 1000, 0)}, ok, nil, false, "linux.uidMappings[0].size"},
		{"too many ranges", many, ok, nil, false, "linux.uidMappings"},
		{"mappings without a user namespace", ok, ok, nil, true, "linux.uidMappings"},
		{"mount mapping overlaps", ok, ok, []specs.LinuxIDMapping{idm(0, 0, 10), idm(0, 20, 10)}, false, "mounts[0].uidMappings[1].containerID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := usernsSpec(t, tc.uid, tc.gid, tc.mountUID)
			if tc.noUserNS {
				raw = []byte(strings.Replace(string(raw), `{"type":"user","path":"/proc/1/ns/user"},`, "", 1))
			}
			_, err := Rewrite(raw, Options{ContainerID: "c1", Sandbox: true})
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "spec."+tc.wantField+":") {
				t.Fatalf("err %v, want ErrInvalidArgument naming spec.%s", err, tc.wantField)
			}
		})
	}
}
