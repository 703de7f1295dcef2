package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// copiedHostDir says whether a bind mount is a host directory that
// [volumes] host_dirs = "copy" copies into the guest: anything but a
// kubelet file volume (copied and kept in sync anyway), an emptyDir or a
// subPath of one (guest storage of the pod) and the pod's /dev/shm. A
// source that is no directory is left to the file copy.
func copiedHostDir(m specs.Mount) bool {
	if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
		return false
	}
	return m.Destination != "/dev/shm" && !isFileVolume(m.Source) && !isEmptyDir(m.Source) && !isEmptyDirSubPath(m.Source) && !isImageVolume(m)
}

// isDir says whether p is a directory, following links as the bind mount
// does (a hostPath may be a link to a directory).
func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// readOnlyHostDirs returns the spec (raw, as containerd wrote it) with
// every copied host directory mounted read-only: the guest holds a
// snapshot taken at creation, and a write that would never reach the host
// fails loudly rather than vanishing.
func readOnlyHostDirs(raw []byte, sp *specs.Spec) ([]byte, error) {
	return editMounts(raw, sp, func(m specs.Mount) (*mountEdit, error) {
		if !copiedHostDir(m) || !isDir(m.Source) || slices.Contains(m.Options, "ro") {
			return nil, nil
		}
		opts := slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "rw" })
		return &mountEdit{field: "options", value: append(opts, "ro")}, nil
	})
}

// mountEdit sets one field of one mount in the raw spec.
type mountEdit struct {
	field string
	value any
}

// editMounts returns raw (the spec as containerd wrote it) with the edits
// edit asks for, mount by mount (nil: leave it). The JSON is edited in
// place, so fields this runtime-spec version does not know survive, and
// raw comes back as it was when nothing changes.
func editMounts(raw []byte, sp *specs.Spec, edit func(specs.Mount) (*mountEdit, error)) ([]byte, error) {
	edits := map[int]*mountEdit{}
	for i, m := range sp.Mounts {
		e, err := edit(m)
		if err != nil {
			return nil, err
		}
		if e != nil {
			edits[i] = e
		}
	}
	if len(edits) == 0 {
		return raw, nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("spec: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	var mounts []map[string]json.RawMessage
	if err := json.Unmarshal(doc["mounts"], &mounts); err != nil || len(mounts) != len(sp.Mounts) {
		return nil, fmt.Errorf("spec: mounts do not parse as %d mounts: %w", len(sp.Mounts), errdefs.ErrInvalidArgument)
	}
	for i, e := range edits {
		if mounts[i] == nil {
			return nil, fmt.Errorf("spec: mounts[%d] is null: %w", i, errdefs.ErrInvalidArgument)
		}
		b, err := json.Marshal(e.value)
		if err != nil {
			return nil, err
		}
		mounts[i][e.field] = b
	}
	b, err := json.Marshal(mounts)
	if err != nil {
		return nil, err
	}
	doc["mounts"] = b
	return json.Marshal(doc)
}
