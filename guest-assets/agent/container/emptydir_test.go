package container

import (
	"testing"

	"github.com/containerd/errdefs"
)

// A disk-backed emptyDir's disk comes from the host: one of another size
// than the annotation's is refused, which would move the owner's limit.
func TestCheckDiskSize(t *testing.T) {
	if err := checkDiskSize("e1", 8<<20, 8<<20); err != nil {
		t.Error(err)
	}
	if err := checkDiskSize("e1", 999936, 1000000); err != nil { // whole sectors of a 1M disk
		t.Error(err)
	}
	for _, got := range []int64{16 << 20, 4 << 20, 8<<20 - 512, 0} {
		if err := checkDiskSize("e1", got, 8<<20); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%d bytes for 8Mi: %v", got, err)
		}
	}
}
