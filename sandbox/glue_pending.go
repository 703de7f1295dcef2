//go:build !coco_glue

// Temporary while the drivers, agent client and init-data packages land in
// parallel; removed once vm.go and glue.go build.
package sandbox

import (
	"context"
	"errors"
)

// New is not built yet.
func New(context.Context, Options) (Sandbox, error) {
	return nil, errors.New("sandbox: real implementation not built yet")
}
