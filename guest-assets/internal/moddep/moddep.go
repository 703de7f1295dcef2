// Package moddep works out, at build time, which kernel module files the
// guest must load and in which order, from an unpacked Debian kernel package.
//
// Debian's linux-image package ships no modules.dep (depmod runs at install
// time), so the dependencies are read from each module's own .modinfo ELF
// section ("depends=", "softdep=") — the same data depmod uses. Built-in
// drivers (modules.builtin) are dropped, and compressed modules (.ko.xz,
// .ko.zst, .ko.gz) are decompressed so the guest needs no decompressor.
package moddep

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Index describes the modules of one kernel release.
type Index struct {
	dir     string              // .../lib/modules/<release>
	release string              // base name of dir
	files   map[string]string   // module name -> path relative to dir
	builtin map[string]bool     // module names compiled into the kernel
	aliases map[string][]string // alias -> module names, read on first need
}

// Module is one module of a resolved load order.
type Module struct {
	Name string // normalised name, e.g. "vmw_vsock_virtio_transport"
	Rel  string // path relative to the release directory, without compression suffix
	src  string // path of the (possibly compressed) file on the host
}

// compressed module suffixes and how to read them.
var suffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// Open indexes dir, a lib/modules/<release> directory.
func Open(dir string) (*Index, error) {
	ix := &Index{dir: dir, release: filepath.Base(dir), files: map[string]string{}, builtin: map[string]bool{}}
	if _, err := os.Stat(filepath.Join(dir, "kernel")); err != nil {
		return nil, fmt.Errorf("moddep: no modules under %s/kernel: is it an unpacked linux-image package's lib/modules/<release>? (%w)", dir, err)
	}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name, ok := moduleName(d.Name())
		if !ok {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if prev, dup := ix.files[name]; dup {
			return fmt.Errorf("moddep: module %s found twice: %s and %s", name, prev, rel)
		}
		ix.files[name] = filepath.ToSlash(rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("moddep: indexing %s: %w", dir, err)
	}
	if len(ix.files) == 0 {
		return nil, fmt.Errorf("moddep: no modules under %s/kernel: is it an unpacked linux-image package's lib/modules/<release>?", dir)
	}
	f, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil, fmt.Errorf("moddep: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, ok := moduleName(path.Base(strings.TrimSpace(sc.Text()))); ok {
			ix.builtin[name] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("moddep: reading modules.builtin: %w", err)
	}
	return ix, nil
}

// Release is the kernel release the index was opened for.
func (ix *Index) Release() string { return ix.release }

// moduleName turns a file name into the kernel's module name ("-" → "_").
func moduleName(file string) (string, bool) {
	for _, s := range suffixes {
		if strings.HasSuffix(file, s) {
			return strings.ReplaceAll(strings.TrimSuffix(file, s), "-", "_"), true
		}
	}
	return "", false
}

// Resolve returns the modules to load for the requested names, each after
// everything it depends on, without built-ins. A requested name that is
// built in is fine (nothing to load); a name that is neither a module nor
// built in is an error. Soft dependencies that name an alias rather than a
// module cannot be resolved without modules.alias; they are returned in
// skipped so the caller can report them.
func (ix *Index) Resolve(names []string) (order []Module, skipped []string, err error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(name, from string, soft bool) error
	visit = func(raw, from string, soft bool) error {
		name := strings.ReplaceAll(raw, "-", "_")
		if _, known := ix.files[name]; soft && !known && !ix.builtin[name] {
			// Soft dependencies often name an alias ("crc32c"): find the
			// module that provides it, as modprobe would.
			provider, err := ix.provider(raw)
			if err != nil {
				return err
			}
			if provider != "" {
				name = provider
			}
		}
		switch state[name] {
		case done:
			return nil
		case visiting:
			if soft {
				return nil // soft dependencies may point back; load order stays valid
			}
			return fmt.Errorf("moddep: dependency cycle through %s (from %s)", name, from)
		}
		if ix.builtin[name] {
			state[name] = done
			return nil
		}
		rel, ok := ix.files[name]
		if !ok {
			if soft {
				skipped = append(skipped, name+" (softdep of "+from+")")
				state[name] = done
				return nil
			}
			if from == "" {
				return fmt.Errorf("moddep: module %q is neither a module nor built into kernel %s: fix the module list", name, ix.release)
			}
			return fmt.Errorf("moddep: %s depends on %s, which kernel %s does not ship", from, name, ix.release)
		}
		state[name] = visiting
		info, err := ix.modinfo(rel)
		if err != nil {
			return err
		}
		if vm := info["vermagic"]; len(vm) == 0 || !strings.HasPrefix(vm[0]+" ", ix.release+" ") {
			return fmt.Errorf("moddep: %s was built for %q, not %s", rel, vm, ix.release)
		}
		var deps []string
		for _, d := range info["depends"] {
			deps = append(deps, splitList(d, ",")...)
		}
		pre, post := softdeps(info["softdep"])
		for _, d := range pre {
			if err := visit(d, name, true); err != nil {
				return err
			}
		}
		for _, d := range deps {
			if err := visit(d, name, false); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, Module{Name: name, Rel: stripCompression(rel), src: filepath.Join(ix.dir, rel)})
		for _, d := range post {
			if err := visit(d, name, true); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n, "", false); err != nil {
			return nil, nil, err
		}
	}
	return order, skipped, nil
}

// provider returns the module that declares alias (modinfo "alias="), or ""
// when none does. When several do, a generic one (outside kernel/arch/) wins:
// arch-optimised variants may need CPU features an emulated CPU lacks, and
// then fail to load. Ties break by name so the choice is stable.
func (ix *Index) provider(alias string) (string, error) {
	if ix.aliases == nil {
		ix.aliases = map[string][]string{}
		names := make([]string, 0, len(ix.files))
		for n := range ix.files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			info, err := ix.modinfo(ix.files[n])
			if err != nil {
				return "", err
			}
			for _, a := range info["alias"] {
				ix.aliases[a] = append(ix.aliases[a], n)
			}
		}
	}
	best := ""
	for _, n := range ix.aliases[alias] {
		generic := !strings.HasPrefix(ix.files[n], "kernel/arch/")
		if best == "" || (generic && strings.HasPrefix(ix.files[best], "kernel/arch/")) {
			best = n
		}
	}
	return best, nil
}

func splitList(s, sep string) []string {
	var out []string
	for _, f := range strings.Split(s, sep) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// softdeps parses "softdep=pre: a b post: c" values.
func softdeps(values []string) (pre, post []string) {
	for _, v := range values {
		var cur *[]string
		for _, f := range strings.Fields(v) {
			switch f {
			case "pre:":
				cur = &pre
			case "post:":
				cur = &post
			default:
				if cur != nil {
					*cur = append(*cur, f)
				}
			}
		}
	}
	return pre, post
}

func stripCompression(rel string) string {
	for _, s := range suffixes[1:] {
		if strings.HasSuffix(rel, s) {
			return strings.TrimSuffix(rel, s) + ".ko"
		}
	}
	return rel
}

// modinfo returns the key=value pairs of a module's .modinfo section.
func (ix *Index) modinfo(rel string) (map[string][]string, error) {
	var r io.ReaderAt
	if strings.HasSuffix(rel, ".ko") {
		// Uncompressed: read only the headers and .modinfo, not the whole
		// file (the alias scan opens every module of the kernel).
		fh, err := os.Open(filepath.Join(ix.dir, rel))
		if err != nil {
			return nil, fmt.Errorf("moddep: %w", err)
		}
		defer fh.Close()
		r = fh
	} else {
		data, err := readModule(filepath.Join(ix.dir, rel))
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("moddep: %s: %w", rel, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("moddep: %s has no .modinfo section", rel)
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("moddep: %s: %w", rel, err)
	}
	info := map[string][]string{}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			info[k] = append(info[k], v)
		}
	}
	return info, nil
}

// readModule returns the uncompressed bytes of a module file.
func readModule(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("moddep: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(p, ".ko.gz"):
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("moddep: %s: %w", p, err)
		}
		r = zr
	case strings.HasSuffix(p, ".ko.zst"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("moddep: %s: %w", p, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(p, ".ko.xz"):
		// xz-utils is a build dependency (scripts/install-deps.sh); Go's
		// standard library has no xz reader.
		out, err := exec.Command("xz", "-dc", p).Output()
		if err != nil {
			return nil, fmt.Errorf("moddep: xz -dc %s: %w (is xz-utils installed?)", p, err)
		}
		return out, nil
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("moddep: reading %s: %w", p, err)
	}
	return data, nil
}

// sigMagic ends a module with an appended signature: the signature, a
// 12-byte descriptor whose last 4 bytes are its big-endian length, then
// this marker (the kernel's scripts/sign-file format).
const sigMagic = "~Module signature appended~\n"

// StripSignature returns data without its appended signature, and whether
// it had one.
func StripSignature(data []byte) ([]byte, bool, error) {
	if !bytes.HasSuffix(data, []byte(sigMagic)) {
		return data, false, nil
	}
	end := len(data) - len(sigMagic) - 12 // start of the descriptor
	if end < 0 {
		return nil, false, fmt.Errorf("moddep: signature marker without a descriptor")
	}
	n := binary.BigEndian.Uint32(data[end+8 : end+12])
	if uint64(n) > uint64(end) {
		return nil, false, fmt.Errorf("moddep: signature of %d bytes in a %d-byte module", n, len(data))
	}
	return data[:end-int(n)], true, nil
}

// Install writes the uncompressed modules of order below outDir (keeping
// their paths relative to the release directory) and returns the manifest
// text for guest-assets/kmod, whose paths point at guestDir (usually
// /lib/modules/<release>). With stripSignatures the modules lose their
// appended signatures: checking one costs the guest kernel an RSA verify
// per module, some 4 ms under TCG (make bench: ~50 ms of the agent's start
// for the vsock modules), and it proves nothing the initrd does not
// already: whoever can change a module in it can change the agent too,
// and a TEE measures the initrd as a whole. The kernel taints itself
// ("E") and loads them, unless it enforces signatures (Secure Boot
// lockdown, module.sig_enforce): keep them there.
func Install(order []Module, outDir, guestDir string, stripSignatures bool) ([]byte, error) {
	var manifest bytes.Buffer
	fmt.Fprintf(&manifest, "# Kernel modules in load order (dependencies first), generated at build time.\n")
	for _, m := range order {
		data, err := readModule(m.src)
		if err != nil {
			return nil, err
		}
		if stripSignatures {
			if data, _, err = StripSignature(data); err != nil {
				return nil, fmt.Errorf("%w: %s", err, m.src)
			}
		}
		dst := filepath.Join(outDir, filepath.FromSlash(m.Rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, fmt.Errorf("moddep: %w", err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return nil, fmt.Errorf("moddep: %w", err)
		}
		fmt.Fprintf(&manifest, "%s\n", path.Join(guestDir, m.Rel))
	}
	return manifest.Bytes(), nil
}

// Names returns the module names of order, for reports.
func Names(order []Module) []string {
	out := make([]string, len(order))
	for i, m := range order {
		out[i] = m.Name
	}
	return out
}
