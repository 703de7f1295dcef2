package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// Limits on the host files copied into the guest for file bind mounts
// (/etc/hosts, /etc/hostname, /etc/resolv.conf, the termination log).
const (
	maxHostFile  = 1 << 20
	maxHostFiles = 4 << 20
)

// hostFiles returns the content of every regular file the spec bind-mounts
// from the host, and of the kubelet's file volumes (secret, configMap,
// projected, downwardAPI directories). The guest cannot see host paths, so
// small files travel with the request; other directories do not (the
// agent gives the pod an empty directory for each) unless copyDirs
// ([volumes] host_dirs = "copy") copies their regular files too, and
// sources that do not exist are left to the guest as before.
func hostFiles(sp *specs.Spec, copyDirs bool) ([]*api.File, error) {
	var files []*api.File
	budget := maxHostFiles
	for _, m := range sp.Mounts {
		if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
			continue
		}
		if isFileVolume(m.Source) || (copyDirs && copiedHostDir(m) && isDir(m.Source)) {
			vol, err := readFileVolume(m.Source, m.Destination, &budget)
			if err != nil {
				return nil, fmt.Errorf("bind mount %s: %w", m.Destination, err)
			}
			if vol != nil {
				files = append(files, vol...)
				continue
			}
		}
		content, mode, err := readHostFile(m.Source)
		if err != nil {
			return nil, fmt.Errorf("bind mount %s: %w", m.Destination, err)
		}
		if content == nil {
			continue
		}
		budget -= len(content)
		if budget < 0 {
			return nil, fmt.Errorf("bind mount %s: bind-mounted host files exceed %d bytes in total; mount fewer or smaller files: %w",
				m.Destination, maxHostFiles, errdefs.ErrInvalidArgument)
		}
		files = append(files, &api.File{Destination: m.Destination, Content: content, Mode: mode})
	}
	return files, nil
}

// readHostFile reads a bind mount's source if it is a regular file. It
// returns nil content for a directory or a missing source (nothing to copy).
//
// The path is resolved once — following symlinks, as the bind mount runc
// would make does (/etc/localtime is one) — and everything after that acts
// on the one inode found: a file swapped for a FIFO, another link or a
// bigger file between a check and a read is never read.
// The first open is O_PATH, which opens no device (opening e.g. a watchdog
// or tape node has effects) and cannot block; only a regular file is then
// opened for reading, through /proc/self/fd (the same inode, not the path
// again), non-blocking, and read through a limit so a file that grows
// cannot make the shim read more than maxHostFile+1 bytes.
func readHostFile(path string) ([]byte, uint32, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("host file %s: %w", path, &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, 0, fmt.Errorf("host file %s: %w", path, &os.PathError{Op: "fstat", Path: path, Err: err})
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return nil, 0, nil
	default:
		return nil, 0, fmt.Errorf("host file %s is %s; only regular files (or directories) can be bind-mounted into a confidential pod, so point the mount at a regular file: %w",
			path, fileKind(st.Mode), errdefs.ErrInvalidArgument)
	}
	if st.Size > maxHostFile {
		return nil, 0, tooBig(path, st.Size)
	}
	f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("host file %s: %w", path, err)
	}
	defer f.Close()
	b, err := readLimited(f, path)
	if err != nil {
		return nil, 0, err
	}
	return b, st.Mode & 0o777, nil
}

// readLimited reads at most maxHostFile bytes, and one more to tell a file
// that grew past the limit after its fstat from one that fits.
func readLimited(r io.Reader, path string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxHostFile+1))
	if err != nil {
		return nil, fmt.Errorf("host file %s: %w", path, err)
	}
	if len(b) > maxHostFile {
		return nil, tooBig(path, int64(len(b)))
	}
	return b, nil
}

func tooBig(path string, size int64) error {
	return fmt.Errorf("host file %s is at least %d bytes; files bind-mounted into a confidential pod are copied into the guest and may be at most %d bytes, so use a volume for bigger content: %w",
		path, size, maxHostFile, errdefs.ErrInvalidArgument)
}

// fileKind names a file type for an error.
func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "a symbolic link (links are not followed: the target could change between the check and the read)"
	case unix.S_IFIFO:
		return "a named pipe (FIFO)"
	case unix.S_IFSOCK:
		return "a unix socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return fmt.Sprintf("of file type %#o", mode&unix.S_IFMT)
}
