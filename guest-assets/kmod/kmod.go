//go:build linux

// Package kmod loads the kernel modules the guest needs, in the order a
// manifest lists them. It runs in the guest (inside coco-agent, PID 1), where
// there is no modprobe, no depmod output and no decompressor: the build
// (guest-assets/internal/moddep) resolved the dependency closure, dropped
// built-ins and decompressed every module, so loading is one finit_module(2)
// per line.
//
// Manifest format (one module per line, dependencies first):
//
//	# comment
//	/lib/modules/6.1.0-56-amd64/kernel/net/vmw_vsock/vsock.ko
//	/lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko napi_tx=1
//
// A line is an absolute module path, optionally followed by module
// parameters (passed to the kernel as they are).
package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultManifest is where the initrd puts the manifest.
const DefaultManifest = "/etc/coco/modules"

// Module is one manifest line.
type Module struct {
	Path   string // absolute path of the uncompressed .ko file
	Params string // module parameters, "" for none
}

// ParseManifest reads a manifest. Errors name the line.
func ParseManifest(r io.Reader) ([]Module, error) {
	var mods []Module
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		path, params, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(path, "/") || !strings.HasSuffix(path, ".ko") {
			return nil, fmt.Errorf("kmod: manifest line %d: %q is not an absolute path to an uncompressed .ko file", n, path)
		}
		mods = append(mods, Module{Path: path, Params: strings.TrimSpace(params)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kmod: reading manifest: %w", err)
	}
	return mods, nil
}

// ReadManifest parses the manifest file at path.
func ReadManifest(path string) ([]Module, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	mods, err := ParseManifest(f)
	if err != nil {
		return nil, fmt.Errorf("%w (manifest %s)", err, path)
	}
	return mods, nil
}

// Name is a module's name as the kernel knows it: the file name without
// .ko, with dashes as underscores.
func (m Module) Name() string {
	base := m.Path[strings.LastIndexByte(m.Path, '/')+1:]
	return strings.ReplaceAll(strings.TrimSuffix(base, ".ko"), "-", "_")
}

// Split cuts a manifest after the last of the named modules: first holds
// them with everything listed before them (their dependencies come first),
// rest the others. Names that are not listed are ignored.
func Split(mods []Module, names ...string) (first, rest []Module) {
	cut := 0
	for i, m := range mods {
		for _, n := range names {
			if m.Name() == n {
				cut = i + 1
			}
		}
	}
	return mods[:cut], mods[cut:]
}

// Take picks the named modules out of mods, keeping both lists in order.
func Take(mods []Module, names ...string) (picked, rest []Module) {
	for _, m := range mods {
		if slices.Contains(names, m.Name()) {
			picked = append(picked, m)
		} else {
			rest = append(rest, m)
		}
	}
	return picked, rest
}

// LoadManifest loads every module listed in the manifest at path, in order.
// A module the kernel already has (EEXIST) counts as loaded; any other
// failure stops and names the module.
func LoadManifest(path string) error {
	mods, err := ReadManifest(path)
	if err != nil {
		return err
	}
	return Load(mods)
}

// Load loads mods in order through finit_module(2).
func Load(mods []Module) error {
	return load(mods, unix.FinitModule)
}

// finitFunc is unix.FinitModule's shape; tests pass a fake.
type finitFunc func(fd int, params string, flags int) error

func load(mods []Module, finit finitFunc) error {
	for _, m := range mods {
		if err := loadOne(m, finit); err != nil {
			return err
		}
	}
	return nil
}

func loadOne(m Module, finit finitFunc) error {
	f, err := os.Open(m.Path)
	if err != nil {
		return fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	err = finit(int(f.Fd()), m.Params, 0)
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
		return nil
	case errors.Is(err, unix.EKEYREJECTED), errors.Is(err, unix.EPERM):
		return fmt.Errorf("kmod: loading %s: %w (the initrd's modules are unsigned; a kernel that enforces signatures, by module.sig_enforce or Secure Boot lockdown, refuses them: rebuild the guest assets with KEEP_MODULE_SIGNATURES=1)", m.Path, err)
	case errors.Is(err, unix.ENOEXEC):
		return fmt.Errorf("kmod: loading %s: %w (built for another kernel? rebuild the initrd with the kernel it boots)", m.Path, err)
	default:
		return fmt.Errorf("kmod: loading %s: %w", m.Path, err)
	}
}
