// Command prepkernel turns an unpacked Debian linux-image package into the
// guest kernel assets: vmlinuz (the bzImage, for firmware and TEE boot),
// vmlinux (its uncompressed ELF, for fast PVH boot), kernel.release, and the
// modules the guest needs (dependency closure, decompressed) with the load
// manifest for guest-assets/kmod.
//
//	prepkernel -root /var/cache/coco/kernel/<ver>/root -out build/guest -modules vsock,virtio_net,...
//
// Output layout under -out:
//
//	vmlinuz, vmlinux, kernel.release
//	modules/<release>/kernel/...ko   (mirrors /lib/modules/<release> in the guest)
//	modules.manifest                  (becomes /etc/coco/modules in the initrd)
package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/coco-runtime/coco/guest-assets/internal/moddep"
	"github.com/coco-runtime/coco/guest-assets/internal/vmlinux"
)

func main() {
	root := flag.String("root", "", "unpacked linux-image package (dpkg-deb -x output)")
	out := flag.String("out", "build/guest", "output directory")
	modules := flag.String("modules", "", "comma-separated module names the guest needs (dependencies are added)")
	keepSigs := flag.Bool("keep-signatures", false, "keep the modules' appended signatures (for guest kernels that enforce them); see moddep.Install")
	flag.Parse()
	if err := run(*root, *out, *modules, !*keepSigs); err != nil {
		fmt.Fprintln(os.Stderr, "prepkernel:", err)
		os.Exit(1)
	}
}

func run(root, out, modules string, stripSignatures bool) error {
	if root == "" || modules == "" {
		return fmt.Errorf("-root and -modules are required")
	}
	releases, err := filepath.Glob(filepath.Join(root, "lib/modules/*"))
	if err != nil || len(releases) != 1 {
		return fmt.Errorf("want exactly one lib/modules/<release> under %s, found %v", root, releases)
	}
	release := filepath.Base(releases[0])
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}

	bz, err := os.ReadFile(filepath.Join(root, "boot", "vmlinuz-"+release))
	if err != nil {
		return err
	}
	// The ELF is cached beside the unpacked package: extracting it takes a
	// few seconds of xz, the input never changes for a given package.
	cached := filepath.Join(filepath.Dir(root), "vmlinux")
	elfImg, err := os.ReadFile(cached)
	if err != nil || vmlinux.CheckPVH(elfImg) != nil {
		if elfImg, err = vmlinux.Extract(bz); err != nil {
			return err
		}
		if err := writeAtomic(cached, elfImg); err != nil {
			return err
		}
	}
	if err := writeAtomic(filepath.Join(out, "vmlinuz"), bz); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(out, "vmlinux"), elfImg); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(out, "kernel.release"), []byte(release+"\n")); err != nil {
		return err
	}

	ix, err := moddep.Open(releases[0])
	if err != nil {
		return err
	}
	order, skipped, err := ix.Resolve(strings.Split(modules, ","))
	if err != nil {
		return err
	}
	// Build the module tree beside the old one and swap only when it
	// changed, so a concurrent initrd build never sees a half-written tree
	// and no stale module from an older list survives.
	modDir := filepath.Join(out, "modules")
	tmpDir := modDir + ".tmp"
	if err := os.RemoveAll(tmpDir); err != nil {
		return err
	}
	manifest, err := moddep.Install(order, filepath.Join(tmpDir, release), "/lib/modules/"+release, stripSignatures)
	if err != nil {
		return err
	}
	if sameTree(tmpDir, modDir) {
		if err := os.RemoveAll(tmpDir); err != nil {
			return err
		}
	} else {
		old := modDir + ".old"
		if err := os.RemoveAll(old); err != nil {
			return err
		}
		if err := os.Rename(modDir, old); err != nil && !os.IsNotExist(err) {
			return err
		}
		if err := os.Rename(tmpDir, modDir); err != nil {
			return err
		}
		if err := os.RemoveAll(old); err != nil {
			return err
		}
	}
	if err := writeAtomic(filepath.Join(out, "modules.manifest"), manifest); err != nil {
		return err
	}

	fmt.Printf("kernel %s\n", release)
	fmt.Printf("modules (load order): %s\n", strings.Join(moddep.Names(order), " "))
	if len(skipped) > 0 {
		fmt.Printf("soft dependencies not resolvable by name (aliases), left out: %s\n", strings.Join(skipped, ", "))
	}
	for _, f := range []string{"vmlinux", "vmlinuz"} {
		data, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			return err
		}
		fmt.Printf("%x  %s/%s (%d bytes)\n", sha256.Sum256(data), out, f, len(data))
	}
	return nil
}

// sameTree reports whether directories a and b hold the same files with the
// same contents.
func sameTree(a, b string) bool {
	files := func(root string) map[string][]byte {
		m := map[string][]byte{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			m[rel] = data
			return nil
		})
		if err != nil {
			return nil
		}
		return m
	}
	fa, fb := files(a), files(b)
	if fa == nil || fb == nil || len(fa) != len(fb) {
		return false
	}
	for k, v := range fa {
		if !bytes.Equal(v, fb[k]) {
			return false
		}
	}
	return true
}

// writeAtomic writes data to p through a temporary file and rename, and
// leaves p untouched when it already holds data (keeps mtimes stable).
func writeAtomic(p string, data []byte) error {
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
		return nil
	}
	// A unique temporary name: concurrent builds must not write the same file.
	f, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".*.tmp")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(f.Name(), 0o644)); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}
