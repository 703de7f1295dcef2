package sandbox

import (
	"fmt"
	"os"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Limits on the host files copied into the guest for file bind mounts
// (/etc/hosts, /etc/hostname, /etc/resolv.conf, the termination log).
const (
	maxHostFile  = 1 << 20
	maxHostFiles = 4 << 20
)

// hostFiles returns the content of every regular file the spec bind-mounts
// from the host. The guest cannot see host paths, so small files travel with
// the request; directories do not (the agent gives them guest tmpfs).
func hostFiles(sp *specs.Spec) ([]*api.File, error) {
	var files []*api.File
	total := 0
	for _, m := range sp.Mounts {
		if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
			continue
		}
		fi, err := os.Stat(m.Source)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if fi.Size() > maxHostFile {
			return nil, fmt.Errorf("bind mount %s: host file %s is %d bytes; files bind-mounted into a confidential pod are copied into the guest and may be at most %d bytes: %w",
				m.Destination, m.Source, fi.Size(), maxHostFile, errdefs.ErrInvalidArgument)
		}
		b, err := os.ReadFile(m.Source)
		if err != nil {
			return nil, fmt.Errorf("bind mount %s: %w", m.Destination, err)
		}
		total += len(b)
		if total > maxHostFiles {
			return nil, fmt.Errorf("bind-mounted host files exceed %d bytes in total: %w", maxHostFiles, errdefs.ErrInvalidArgument)
		}
		files = append(files, &api.File{Destination: m.Destination, Content: b, Mode: uint32(fi.Mode().Perm())})
	}
	return files, nil
}
