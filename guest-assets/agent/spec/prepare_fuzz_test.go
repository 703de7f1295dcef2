package spec

import (
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// FuzzPrepareContainer feeds wire bytes through the guest's path for a
// PrepareContainer request: protobuf decoding, field validation, spec
// rewrite. Nothing may panic, and every failure must carry an errdefs class.
func FuzzPrepareContainer(f *testing.F) {
	seed := &api.PrepareContainerRequest{
		ContainerId: "c1",
		Spec:        hostSpec(f),
		Rootfs:      &api.Rootfs{Source: &api.Rootfs_Block{Block: &api.BlockDevice{Serial: "r0123456789abcdef012", Fstype: "erofs"}}},
		Files:       []*api.File{{Destination: "/etc/hosts", Content: []byte("127.0.0.1 localhost\n"), Mode: 0o644}},
	}
	b, err := proto.Marshal(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{0x0a, 0x02, 'c', '1', 0x12, 0x02, '{', '}'})
	f.Fuzz(func(t *testing.T, wire []byte) {
		var r api.PrepareContainerRequest
		if err := proto.Unmarshal(wire, &r); err != nil {
			return // the ttrpc layer reports this as a malformed request
		}
		if err := r.Validate(); err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("Validate: unclassified error %v", err)
			}
			return
		}
		files := map[string]string{}
		for i, file := range r.GetFiles() {
			files[file.GetDestination()] = fmt.Sprintf("/run/coco/bundles/%s/files/f%d", r.GetContainerId(), i)
		}
		_, err := Rewrite(r.GetSpec(), Options{ContainerID: r.GetContainerId(), Sandbox: r.GetSandboxContainer(), PodNamespace: SandboxNamespaces(2), Files: files})
		if err != nil && !errdefs.IsInvalidArgument(err) && !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("Rewrite: unclassified error %v", err)
		}
	})
}
