// Command mkinitrd writes the guest's initrd, reproducibly (see
// guest-assets/internal/layout for what goes in).
//
//	mkinitrd -assets build/guest -init build/guest/coco-agent -o build/guest/initrd.img
//	         [-crun build/guest/crun] [-pause build/guest/coco-pause] [-policy build/guest/coco-policy] [-compression none|gzip] [-add /guest/path=host/path ...]
//	         [-tools-out build/guest/tools.erofs] [-tee]
//
// With -tools-out, crun and coco-policy go into that EROFS image (the
// tools disk of runtime classes without a TEE) instead of the initrd. With
// -tee the initrd is a TEE guest's: its agent fails closed (see
// guest-assets/agent/trust); -tee and -tools-out exclude each other.
package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/coco-runtime/coco/guest-assets/initrd"
	"github.com/coco-runtime/coco/guest-assets/internal/layout"
)

// extraFlag collects repeated -add GUEST=HOST flags.
type extraFlag map[string]string

func (e extraFlag) String() string { return fmt.Sprint(map[string]string(e)) }

func (e extraFlag) Set(v string) error {
	g, h, ok := strings.Cut(v, "=")
	if !ok || !strings.HasPrefix(g, "/") || h == "" {
		return fmt.Errorf("want /guest/path=host/path, got %q", v)
	}
	if _, dup := e[g]; dup {
		return fmt.Errorf("%s given twice", g)
	}
	e[g] = h
	return nil
}

func main() {
	extra := extraFlag{}
	assets := flag.String("assets", "build/guest", "directory `make kernel` wrote (kernel.release, modules, modules.manifest)")
	initPath := flag.String("init", "", "host path of PID 1 (coco-agent)")
	pause := flag.String("pause", "", "host path of coco-pause (default: <assets>/coco-pause)")
	policyEngine := flag.String("policy", "", "host path of coco-policy, the agent's Rego engine (default: <assets>/coco-policy)")
	crun := flag.String("crun", "", "host path of the static crun, the OCI runtime (default: <assets>/crun)")
	out := flag.String("o", "", "output file")
	comp := flag.String("compression", initrd.None, "none or gzip")
	flag.Var(extra, "add", "extra file, /guest/path=host/path (repeatable)")
	toolsOut := flag.String("tools-out", "", "write crun and coco-policy to this read-only EROFS `image` (hypervisor.tools_image) and leave them out of the initrd")
	mkfs := flag.String("mkfs", "mkfs.erofs", "mkfs.erofs binary for -tools-out")
	teeGuest := flag.Bool("tee", false, "mark the initrd as a TEE guest's ("+layout.TEEMarkerPath+"): its agent refuses what it cannot verify")
	flag.Parse()
	if *teeGuest && *toolsOut != "" {
		fmt.Fprintln(os.Stderr, "mkinitrd: -tee and -tools-out exclude each other: a TEE guest ignores the tools disk and must carry crun and coco-policy")
		os.Exit(2)
	}
	if *pause == "" {
		*pause = filepath.Join(*assets, "coco-pause")
	}
	if *policyEngine == "" {
		*policyEngine = filepath.Join(*assets, "coco-policy")
	}
	if *crun == "" {
		*crun = filepath.Join(*assets, "crun")
	}
	in := layout.Inputs{Init: *initPath, Crun: *crun, Pause: *pause, Policy: *policyEngine, Assets: *assets, Extra: extra, TEE: *teeGuest}
	if *toolsOut != "" {
		if err := writeTools(in, *mkfs, *toolsOut); err != nil {
			fmt.Fprintln(os.Stderr, "mkinitrd:", err)
			os.Exit(1)
		}
		in.Crun, in.Policy = "", ""
	}
	if err := run(in, *out, *comp); err != nil {
		fmt.Fprintln(os.Stderr, "mkinitrd:", err)
		os.Exit(1)
	}
}

func writeTools(in layout.Inputs, mkfs, out string) error {
	if err := layout.WriteToolsImage(in, mkfs, out); err != nil {
		return err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	fmt.Printf("%x  %s (%d bytes, tools disk)\n", sha256.Sum256(b), out, len(b))
	return nil
}

func run(in layout.Inputs, out, comp string) error {
	if out == "" || in.Init == "" {
		return fmt.Errorf("-o and -init are required")
	}
	entries, err := layout.Entries(in)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := initrd.Write(&buf, entries, comp); err != nil {
		return err
	}
	// Write beside the target under a unique name, then rename: a VM
	// starting meanwhile reads the old or the new image, never half of one.
	f, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".*.tmp")
	if err != nil {
		return err
	}
	_, werr := f.Write(buf.Bytes())
	if err := errors.Join(werr, f.Close(), os.Chmod(f.Name(), 0o644)); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		os.Remove(f.Name())
		return err
	}
	fmt.Printf("%x  %s (%d bytes, %d entries, compression %s)\n", sha256.Sum256(buf.Bytes()), out, buf.Len(), len(entries), comp)
	return nil
}
