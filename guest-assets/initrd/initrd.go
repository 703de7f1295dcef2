// Package initrd writes Linux initramfs archives (cpio "newc" format) that are
// byte-for-byte reproducible: the same entries always give the same bytes.
//
// The guest's initrd is part of a confidential VM's launch measurement, so
// nothing about the build host may leak into it: entries are sorted by path,
// missing parent directories are created, every mtime is 0, every owner is
// root, inode numbers are assigned in archive order, and compression (if
// any) uses a fixed header with no name and no timestamp.
package initrd

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// Compression names accepted by Write.
const (
	// None writes the cpio archive as is. The kernel copies it straight
	// into its rootfs, which is the fastest under software emulation.
	None = "none"
	// Gzip compresses at gzip.BestCompression with an empty gzip header.
	// The bytes are stable for a given Go toolchain (pinned in go.mod).
	Gzip = "gzip"
)

// Entry is one file system object in the archive.
type Entry struct {
	// Path inside the guest, e.g. "/usr/bin/runc" (a leading slash is
	// optional). It must be clean: no "..", no empty elements.
	Path string
	// Mode holds the type (0 for a regular file, fs.ModeDir, fs.ModeSymlink,
	// fs.ModeDevice|fs.ModeCharDevice, fs.ModeDevice) and the permission bits
	// (including fs.ModeSetuid, fs.ModeSetgid, fs.ModeSticky, or their
	// Unix spellings 0o4000, 0o2000, 0o1000).
	Mode fs.FileMode
	// Data is the content of a regular file.
	Data []byte
	// Link is the target of a symlink.
	Link string
	// Major and Minor are the device numbers of a device node.
	Major, Minor uint32
}

// dirMode is the mode of parent directories the archive adds on its own.
const dirMode = fs.ModeDir | 0o755

// Write writes entries as a newc cpio archive to w, compressed as named by
// compression (None or Gzip; "" means None). Parent directories that are not
// listed are added with mode 0755. Two entries with the same path, or an
// entry below a path that is not a directory, are errors.
func Write(w io.Writer, entries []Entry, compression string) error {
	all, err := normalize(entries)
	if err != nil {
		return err
	}
	switch compression {
	case None, "":
		bw := bufio.NewWriterSize(w, 1<<20)
		if err := writeCpio(bw, all); err != nil {
			return err
		}
		return bw.Flush()
	case Gzip:
		zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return err
		}
		// The zero Header has no name, no comment and ModTime zero, which
		// gzip writes as 0: nothing from the build host ends up in it.
		zw.OS = 255 // "unknown", rather than the builder's OS
		bw := bufio.NewWriterSize(zw, 1<<20)
		if err := writeCpio(bw, all); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		return zw.Close()
	default:
		return fmt.Errorf("initrd: unknown compression %q: use %q or %q", compression, None, Gzip)
	}
}

// normalize cleans the paths, adds missing parents, checks for duplicates and
// conflicts, and sorts the result. Sorting by the full path byte-wise puts
// every directory before its contents, which the kernel's unpacker needs.
func normalize(entries []Entry) ([]Entry, error) {
	byPath := make(map[string]Entry, len(entries))
	for i, e := range entries {
		p, err := cleanPath(e.Path)
		if err != nil {
			return nil, fmt.Errorf("initrd: entry %d: %w", i, err)
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("initrd: entry %d: path %q listed twice", i, e.Path)
		}
		if err := checkType(e); err != nil {
			return nil, fmt.Errorf("initrd: entry %q: %w", e.Path, err)
		}
		e.Path = p
		byPath[p] = e
	}
	for p := range byPath {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			parent, ok := byPath[dir]
			if !ok {
				byPath[dir] = Entry{Path: dir, Mode: dirMode}
				continue
			}
			if !parent.Mode.IsDir() {
				return nil, fmt.Errorf("initrd: entry %q: parent %q is not a directory", p, dir)
			}
		}
	}
	out := make([]Entry, 0, len(byPath))
	for _, e := range byPath {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func cleanPath(p string) (string, error) {
	rel := strings.TrimPrefix(p, "/")
	if rel == "" {
		return "", fmt.Errorf("empty path (the root directory is implicit)")
	}
	if path.Clean(rel) != rel || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("path %q is not clean: write it without \"..\", \".\", or doubled slashes", p)
	}
	return rel, nil
}

func checkType(e Entry) error {
	switch t := e.Mode.Type(); t {
	case 0:
		if e.Link != "" {
			return fmt.Errorf("a regular file has no Link (set Mode to fs.ModeSymlink for a symlink)")
		}
	case fs.ModeDir:
		if len(e.Data) != 0 || e.Link != "" {
			return fmt.Errorf("a directory has no Data or Link")
		}
	case fs.ModeSymlink:
		if e.Link == "" {
			return fmt.Errorf("symlink without Link target")
		}
		if len(e.Data) != 0 {
			return fmt.Errorf("a symlink has no Data")
		}
	case fs.ModeDevice | fs.ModeCharDevice, fs.ModeDevice:
		if len(e.Data) != 0 || e.Link != "" {
			return fmt.Errorf("a device node has no Data or Link")
		}
	default:
		return fmt.Errorf("unsupported file type %v (regular, dir, symlink, char or block device)", t)
	}
	return nil
}

// Unix file type and permission bits as stored in the cpio header.
const (
	sIFREG = 0o100000
	sIFDIR = 0o040000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
	sIFBLK = 0o060000
	sISUID = 0o4000
	sISGID = 0o2000
	sISVTX = 0o1000
)

// unixMode converts a Go file mode to the st_mode value of the header.
// The Unix bits 0o7000 are honoured too, so Dir("/tmp", 0o1777) means sticky.
func unixMode(m fs.FileMode) uint32 {
	mode := uint32(m & (fs.ModePerm | 0o7000))
	if m&fs.ModeSetuid != 0 {
		mode |= sISUID
	}
	if m&fs.ModeSetgid != 0 {
		mode |= sISGID
	}
	if m&fs.ModeSticky != 0 {
		mode |= sISVTX
	}
	switch m.Type() {
	case fs.ModeDir:
		mode |= sIFDIR
	case fs.ModeSymlink:
		mode |= sIFLNK
	case fs.ModeDevice | fs.ModeCharDevice:
		mode |= sIFCHR
	case fs.ModeDevice:
		mode |= sIFBLK
	default:
		mode |= sIFREG
	}
	return mode
}

const (
	newcMagic = "070701"
	trailer   = "TRAILER!!!"
)

// writeCpio writes sorted, validated entries and the trailer. Inode numbers
// count up from 1 in archive order, so they depend only on the entry list.
func writeCpio(w io.Writer, entries []Entry) error {
	for i, e := range entries {
		var body []byte
		nlink := uint32(1)
		switch e.Mode.Type() {
		case 0:
			body = e.Data
		case fs.ModeSymlink:
			body = []byte(e.Link)
		case fs.ModeDir:
			nlink = 2
		}
		if uint64(len(body)) > 0xffffffff {
			return fmt.Errorf("initrd: entry %q: %d bytes is more than newc's 4 GiB limit", e.Path, len(body))
		}
		h := header{
			ino:      uint32(i + 1),
			mode:     unixMode(e.Mode),
			nlink:    nlink,
			fileSize: uint32(len(body)),
			rdevMaj:  e.Major,
			rdevMin:  e.Minor,
		}
		if err := writeRecord(w, h, e.Path, body); err != nil {
			return err
		}
	}
	return writeRecord(w, header{nlink: 1}, trailer, nil)
}

type header struct {
	ino, mode, nlink, fileSize, rdevMaj, rdevMin uint32
}

// writeRecord writes one header, its NUL-terminated name padded to 4 bytes
// (counting the 110-byte header), then the body padded to 4 bytes.
func writeRecord(w io.Writer, h header, name string, body []byte) error {
	// Fields: magic ino mode uid gid nlink mtime filesize devmajor devminor
	// rdevmajor rdevminor namesize check — all 8 hex digits but the magic.
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		newcMagic, h.ino, h.mode, 0, 0, h.nlink, 0, h.fileSize, 0, 0,
		h.rdevMaj, h.rdevMin, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+4)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := w.Write(buf); err != nil {
		return err
	}
	if len(body) == 0 {
		return nil
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	_, err := w.Write(make([]byte, pad4(len(body))))
	return err
}

func pad4(n int) int { return (4 - n%4) % 4 }
