// Package layout decides what goes into the guest's initrd and where.
//
// The initrd holds only what PID 1 needs before any container exists:
//
//	/init                              coco-agent (static)
//	/usr/bin/crun                      static crun, the OCI runtime
//	/lib/modules/<release>/kernel/...  the modules of the manifest, uncompressed
//	/etc/coco/modules                  load order for guest-assets/kmod
//	/etc/coco/kernel.release           the release the modules belong to
//	/etc/coco/tee                      only in a TEE initrd: the guest is confidential
//	/dev/console                       so the kernel can hand PID 1 a console
//	/proc /sys /dev /run /tmp /etc     mount points and scratch
package layout

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/coco-runtime/coco/guest-assets/agent/pause"
	"github.com/coco-runtime/coco/guest-assets/agent/policyproc"
	"github.com/coco-runtime/coco/guest-assets/initrd"
	"github.com/coco-runtime/coco/guest-assets/kmod"
)

// Guest paths other guest code relies on.
const (
	InitPath          = "/init"
	CrunPath          = "/usr/bin/crun"
	PausePath         = pause.GuestPath      // /usr/bin/coco-pause
	PolicyPath        = policyproc.GuestPath // /usr/bin/coco-policy
	ModulesManifest   = kmod.DefaultManifest // /etc/coco/modules
	KernelReleasePath = "/etc/coco/kernel.release"
	// TEEMarkerPath makes the agent a TEE guest (guest-assets/agent/trust);
	// the initrd is measured, so a verifier sees whether it is there.
	TEEMarkerPath = "/etc/coco/tee"
)

// Inputs are the host files the initrd is made of.
type Inputs struct {
	// Init is the host path of the program that runs as PID 1.
	Init string
	// Crun is the host path of the static crun, the OCI runtime; "" leaves it
	// out (boot tests).
	Crun string
	// Pause is the host path of coco-pause, the sandbox container's
	// process; "" leaves it out (boot tests).
	Pause string
	// Policy is the host path of coco-policy, the agent's Rego engine; ""
	// leaves it out (boot tests; such a guest refuses policy text).
	Policy string
	// Assets is the directory `make kernel` wrote: kernel.release,
	// modules.manifest and modules/<release>/.
	Assets string
	// Extra maps further guest paths to host files (mode 0755 if the host
	// file is executable, else 0644), for what the agent asks to carry.
	Extra map[string]string
	// TEE marks the initrd as a TEE guest's (TEEMarkerPath): its agent
	// fails closed whatever the host says.
	TEE bool
}

// Entries returns the initrd's entries for in. Missing inputs are errors
// that say which make target produces them.
func Entries(in Inputs) ([]initrd.Entry, error) {
	if in.Init == "" || in.Assets == "" {
		return nil, fmt.Errorf("layout: Init and Assets are required")
	}
	releaseRaw, err := os.ReadFile(filepath.Join(in.Assets, "kernel.release"))
	if err != nil {
		return nil, fmt.Errorf("layout: %w (run `make kernel`)", err)
	}
	release := strings.TrimSpace(string(releaseRaw))
	if release == "" || strings.ContainsAny(release, "/ ") {
		return nil, fmt.Errorf("layout: %s/kernel.release holds %q, not a kernel release (run `make kernel`)", in.Assets, releaseRaw)
	}
	manifest, err := os.ReadFile(filepath.Join(in.Assets, "modules.manifest"))
	if err != nil {
		return nil, fmt.Errorf("layout: %w (run `make kernel`)", err)
	}
	nmods, err := checkManifest(manifest, release, filepath.Join(in.Assets, "modules", release))
	if err != nil {
		return nil, err
	}

	entries := []initrd.Entry{
		initrd.Dir("/proc", 0o555),
		initrd.Dir("/sys", 0o555),
		initrd.Dir("/dev", 0o755),
		initrd.Dir("/run", 0o755),
		initrd.Dir("/tmp", 0o1777),
		initrd.Dir("/etc", 0o755),
		initrd.CharDevice("/dev/console", 0o600, 5, 1),
		{Path: ModulesManifest, Mode: 0o644, Data: manifest},
		{Path: KernelReleasePath, Mode: 0o644, Data: []byte(release + "\n")},
	}
	if in.TEE {
		entries = append(entries, initrd.Entry{Path: TEEMarkerPath, Mode: 0o644, Data: []byte(teeMarkerText)})
	}
	add := func(guest, host string, perm fs.FileMode) error {
		e, err := initrd.File(guest, host, perm)
		if err != nil {
			return fmt.Errorf("layout: %w", err)
		}
		entries = append(entries, e)
		return nil
	}
	if err := add(InitPath, in.Init, 0o755); err != nil {
		return nil, err
	}
	if in.Crun != "" {
		if err := add(CrunPath, in.Crun, 0o755); err != nil {
			return nil, fmt.Errorf("%w (run `make crun`)", err)
		}
	}
	if in.Pause != "" {
		if err := add(PausePath, in.Pause, 0o755); err != nil {
			return nil, fmt.Errorf("%w (run `make coco-pause`)", err)
		}
	}
	if in.Policy != "" {
		if err := add(PolicyPath, in.Policy, 0o755); err != nil {
			return nil, fmt.Errorf("%w (run `make coco-policy`)", err)
		}
	}
	// A kernel with everything built in (GUEST_KERNEL=own) has an empty
	// manifest and no module tree: the initrd carries no modules at all.
	if nmods > 0 {
		mods, err := initrd.Tree("/lib/modules/"+release, filepath.Join(in.Assets, "modules", release))
		if err != nil {
			return nil, fmt.Errorf("layout: modules: %w (run `make kernel`)", err)
		}
		entries = append(entries, mods...)
	}

	guests := make([]string, 0, len(in.Extra))
	for g := range in.Extra {
		guests = append(guests, g)
	}
	sort.Strings(guests)
	for _, g := range guests {
		info, err := os.Stat(in.Extra[g])
		if err != nil {
			return nil, fmt.Errorf("layout: extra file for %s: %w", g, err)
		}
		perm := fs.FileMode(0o644)
		if info.Mode().Perm()&0o111 != 0 {
			perm = 0o755
		}
		if err := add(g, in.Extra[g], perm); err != nil {
			return nil, err
		}
	}
	return entries, nil
}

const teeMarkerText = "This initrd boots a confidential (TEE) guest: coco-agent takes the TEE policy,\n" +
	"ignores any tools disk and refuses containers unless its attestation report binds its init-data.\n"

// checkManifest makes sure every module the manifest names is in the
// modules directory, so a stale manifest fails here and not in the guest.
// It returns how many modules the manifest lists.
func checkManifest(manifest []byte, release, modDir string) (int, error) {
	mods, err := kmod.ParseManifest(strings.NewReader(string(manifest)))
	if err != nil {
		return 0, fmt.Errorf("layout: %w", err)
	}
	prefix := "/lib/modules/" + release + "/"
	for _, m := range mods {
		rel, ok := strings.CutPrefix(m.Path, prefix)
		if !ok {
			return 0, fmt.Errorf("layout: manifest module %s is not under %s (run `make kernel`)", m.Path, prefix)
		}
		if _, err := os.Stat(filepath.Join(modDir, filepath.FromSlash(path.Clean(rel)))); err != nil {
			return 0, fmt.Errorf("layout: manifest module %s: %w (run `make kernel`)", m.Path, err)
		}
	}
	return len(mods), nil
}
