package options

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// savedFile holds the runtime options `start` received, for the long-running
// shim process: containerd hands the options only to `start`, and with the
// sandbox API no CreateTaskRequest brings them again.
const savedFile = "coco-runtime-options.pb"

// Save writes the runtime options into the bundle; nil removes nothing and
// writes nothing.
func Save(bundle string, a *anypb.Any) error {
	if a == nil {
		return nil
	}
	data, err := proto.Marshal(a)
	if err != nil {
		return err
	}
	tmp := filepath.Join(bundle, savedFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(bundle, savedFile))
}

// ReadSaved reads what Save wrote; nil, nil when nothing was saved.
func ReadSaved(bundle string) (*anypb.Any, error) {
	if bundle == "" {
		return nil, nil
	}
	data, err := os.ReadFile(filepath.Join(bundle, savedFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", filepath.Join(bundle, savedFile), err, errdefs.ErrDataLoss)
	}
	return &a, nil
}
