// Package snapshotter is the node's snapshotter for runtime classes whose
// guest pulls the image itself: it tells containerd that every image layer
// is already unpacked, so containerd never fetches or unpacks layer content
// on the host, and the containers' root filesystems on the host are empty.
//
// containerd's unpacker prepares one snapshot per layer, labelled
// containerd.io/snapshot.ref=<chain id>; when Prepare answers
// AlreadyExists and a committed snapshot of that chain id exists, it skips
// the layer's blob (core/unpack/unpacker.go). For such a Prepare this
// snapshotter commits an empty snapshot under the chain id and answers
// AlreadyExists. Everything else (the containers' writable snapshots, the
// view, usage, cleanup) is the wrapped overlay snapshotter's work. The host
// still fetches the manifest and the image config (CRI needs them for image
// status and for the container's default process), never a layer.
package snapshotter

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Label names (containerd's unpacker and CRI set them).
const (
	// labelRef is the chain id a layer snapshot will be committed as.
	labelRef = "containerd.io/snapshot.ref"
	// LabelGuestPulled marks the empty layers this snapshotter made, so
	// `ctr snapshot info` shows why a layer holds nothing.
	LabelGuestPulled = "io.coco.snapshot/guest-pulled"
)

// Skipping wraps a snapshotter so that image layers are never unpacked on
// the host.
type Skipping struct {
	snapshots.Snapshotter
}

// Prepare commits an empty layer instead of preparing one to unpack into
// when containerd's unpacker asks for a layer snapshot.
func (s Skipping) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	chainID, ok := info.Labels[labelRef]
	if !ok {
		return s.Snapshotter.Prepare(ctx, key, parent, opts...)
	}
	if _, err := s.Snapshotter.Stat(ctx, chainID); err == nil {
		return nil, fmt.Errorf("layer %s: %w", chainID, errdefs.ErrAlreadyExists)
	}
	if err := s.commitEmpty(ctx, key, parent, chainID, info.Labels); err != nil {
		return nil, err
	}
	log.G(ctx).WithField("chain_id", chainID).Debug("layer left to the guest: committed empty")
	return nil, fmt.Errorf("layer %s is pulled by the guest: %w", chainID, errdefs.ErrAlreadyExists)
}

// commitEmpty makes the committed, empty snapshot chainID on parent.
func (s Skipping) commitEmpty(ctx context.Context, key, parent, chainID string, labels map[string]string) error {
	// All labels stay: the GC labels keep the layer alive with its image,
	// and containerd's metadata store finds the layer by its ref label
	// (a committed snapshot labelled ref=<chain id> on the same parent).
	keep := map[string]string{LabelGuestPulled: "true"}
	for k, v := range labels {
		keep[k] = v
	}
	if _, err := s.Snapshotter.Prepare(ctx, key, parent, snapshots.WithLabels(keep)); err != nil {
		return fmt.Errorf("layer %s: prepare: %w", chainID, err)
	}
	if err := s.Snapshotter.Commit(ctx, chainID, key, snapshots.WithLabels(keep)); err != nil {
		s.Snapshotter.Remove(ctx, key)
		if errdefs.IsAlreadyExists(err) {
			return nil // another pull of the same image won the race
		}
		return fmt.Errorf("layer %s: commit: %w", chainID, err)
	}
	return nil
}
