package snapshotter

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/native"
	"github.com/containerd/errdefs"
)

// The unpacker's Prepare of a layer gets AlreadyExists and finds the chain
// id committed (so it skips the blob); a container's own Prepare on top
// works as usual and sees an empty root filesystem.
func TestLayersLeftToTheGuest(t *testing.T) {
	ctx := context.Background()
	inner, err := native.NewSnapshotter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sn := Skipping{inner}
	layer := func(key, parent, chainID string) error {
		_, err := sn.Prepare(ctx, key, parent, snapshots.WithLabels(map[string]string{
			labelRef: chainID, "containerd.io/gc.root": "x",
		}))
		return err
	}
	if err := layer("extract-1 sha256:a", "", "sha256:a"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("first layer: %v", err)
	}
	if err := layer("extract-2 sha256:b", "sha256:a", "sha256:b"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second layer: %v", err)
	}
	info, err := sn.Stat(ctx, "sha256:b")
	if err != nil || info.Kind != snapshots.KindCommitted || info.Parent != "sha256:a" || info.Labels[LabelGuestPulled] != "true" {
		t.Fatalf("chain id sha256:b: %+v, %v", info, err)
	}
	// containerd's metadata store looks the layer up by this label.
	if info.Labels[labelRef] != "sha256:b" {
		t.Errorf("the committed layer's ref label is %q", info.Labels[labelRef])
	}
	// Pulling the same image again: AlreadyExists, nothing new.
	if err := layer("extract-3 sha256:b", "sha256:a", "sha256:b"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("again: %v", err)
	}
	mounts, err := sn.Prepare(ctx, "container-1", "sha256:b")
	if err != nil || len(mounts) == 0 {
		t.Fatalf("container snapshot: %v %v", mounts, err)
	}
	n := 0
	sn.Walk(ctx, func(context.Context, snapshots.Info) error { n++; return nil })
	if n != 3 {
		t.Fatalf("%d snapshots, want the two empty layers and the container's", n)
	}
}
