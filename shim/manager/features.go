package manager

import (
	"encoding/json"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/types/known/anypb"
)

// guestFeatures are what a container of this runtime can be given: the
// guest's crun behind the agent's spec rewrite (guest-assets/agent/spec),
// which keeps these bind mount options. containerd's CRI reads them from
// -info: "rro" lets it make RecursiveReadOnly mounts for this handler, and
// user namespaces with id-mapped mounts let it run pods with
// hostUsers: false (crun does both in the guest kernel). Without features
// containerd assumes neither and refuses such pods.
func guestFeatures() *features.Features {
	enabled := true
	return &features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		MountOptions: []string{
			"bind", "rbind", "ro", "rw", "rro", "rrw", "nosuid", "nodev", "noexec",
			"private", "rprivate", "slave", "rslave", "shared", "rshared", "idmap", "ridmap",
		},
		Linux: &features.Linux{
			Namespaces: []string{"cgroup", "ipc", "mount", "network", "pid", "user", "uts"},
			MountExtensions: &features.MountExtensions{
				IDMap: &features.IDMap{Enabled: &enabled},
			},
		},
	}
}

// marshalFeatures encodes them as containerd's typeurl does a non-proto
// type (JSON under the URL containerd registers for features.Features),
// without linking containerd's runtime package for one registration.
func marshalFeatures() (*anypb.Any, error) {
	b, err := json.Marshal(guestFeatures())
	if err != nil {
		return nil, err
	}
	url := "types.containerd.io/opencontainers/runtime-spec/" + strconv.Itoa(specs.VersionMajor) + "/features/Features"
	return &anypb.Any{TypeUrl: url, Value: b}, nil
}
