// Package vmplan turns a runtime class and one pod's inputs into the VM the
// driver launches: the one place that goes config → init-data binding →
// disks → driver. The sandbox launches the plan, `vm-command` prints it and
// `measure --config` hashes it, so what a verifier is told to trust is
// what the shim runs, by construction.
package vmplan

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/driver"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

// The pod directory's layout: the driver owns VMDir; the disk images the
// plan attaches lie beside it and go with the pod.
const (
	VMDir         = "vm"
	InitDataImage = "initdata.img"
	ScratchImage  = "scratch.img"
)

// Pod is what one pod brings to its VM.
type Pod struct {
	ID string
	// Dir is the pod's state directory (absolute).
	Dir string
	// Annotations are the pod's; init-data is read from
	// initdata.AnnotationKey when the class's annotations_allowed admits it.
	Annotations map[string]string
	// InitDataFile, when set, replaces both the annotation and the class's
	// runtime.initdata (the tools' --initdata).
	InitDataFile string
}

// InitData is the pod's init-data as it is bound and delivered.
type InitData struct {
	Doc *initdata.InitData
	// Source says where it came from: "annotation <key>" or a file path.
	Source string
	// Note says how (or that it is not) bound into the launch.
	Note  string
	image []byte // the block image the guest reads
}

// Plan is one pod's VM: the resolved driver config plus the files that must
// exist before the driver starts it.
type Plan struct {
	VM       hypervisor.Config
	InitData *InitData // nil: the pod has none
	pod      Pod
	scratch  int64 // scratch disk size in bytes; 0: none
}

// New resolves class c for pod. It reads the init-data (annotation or file)
// and checks it, but writes nothing: Create does.
func New(c *configs.Config, pod Pod) (*Plan, error) {
	if c == nil {
		return nil, fmt.Errorf("pod %s: no runtime class configuration: %w", pod.ID, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(pod.Dir) {
		return nil, fmt.Errorf("pod %s: state directory %q: want an absolute path: %w", pod.ID, pod.Dir, errdefs.ErrInvalidArgument)
	}
	vm, err := c.VM(pod.ID, filepath.Join(pod.Dir, VMDir))
	if err != nil {
		return nil, err
	}
	p := &Plan{VM: vm, pod: pod}
	id, err := readInitData(c, pod)
	if err != nil {
		return nil, err
	}
	if id != nil {
		if id.image, err = initdata.BlockImage(id.Doc.Raw()); err != nil {
			return nil, err
		}
		p.VM.LaunchData, id.Note = initdata.Binding(vm.TEE.Kind, id.Doc)
		p.VM.Disks = append(p.VM.Disks, hypervisor.Disk{ID: api.InitDataDiskSerial, Path: filepath.Join(pod.Dir, InitDataImage), ReadOnly: true})
		p.InitData = id
	}
	if mib := c.Rootfs.ScratchMiB; c.Rootfs.GuestPull && mib > 0 {
		p.scratch = int64(mib) << 20
		p.VM.Disks = append(p.VM.Disks, hypervisor.Disk{ID: api.ScratchDiskSerial, Path: filepath.Join(pod.Dir, ScratchImage)})
	}
	return p, nil
}

// readInitData takes init-data from the tools' file, else the pod
// annotation (when allowed), else the class's runtime.initdata.
func readInitData(c *configs.Config, pod Pod) (*InitData, error) {
	if pod.InitDataFile != "" {
		doc, err := initdata.ReadFile(pod.InitDataFile)
		if err != nil {
			return nil, err
		}
		return &InitData{Doc: doc, Source: pod.InitDataFile}, nil
	}
	if v, ok := pod.Annotations[initdata.AnnotationKey]; ok {
		if !c.AnnotationAllowed(initdata.AnnotationKey) {
			return nil, fmt.Errorf("annotation %s is not allowed by runtime class config %s: add it to [runtime] annotations_allowed: %w",
				initdata.AnnotationKey, c.Source(), errdefs.ErrPermissionDenied)
		}
		doc, err := initdata.Decode(v)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", initdata.AnnotationKey, err)
		}
		return &InitData{Doc: doc, Source: "annotation " + initdata.AnnotationKey}, nil
	}
	if path := c.Runtime.InitData; path != "" {
		doc, err := initdata.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("[runtime] initdata in %s: %w", c.Source(), err)
		}
		return &InitData{Doc: doc, Source: path}, nil
	}
	return nil, nil
}

// Notes are what the user should know about the plan (the init-data
// binding); the driver adds its own to Command.
func (p *Plan) Notes() []string {
	if p.InitData != nil && p.InitData.Note != "" {
		return []string{p.InitData.Note}
	}
	return nil
}

// Create writes the disk images the plan attaches into the pod directory
// (the driver checks boot disks exist). It says whether it wrote any; on
// error it has removed what it wrote.
func (p *Plan) Create() (bool, error) {
	if p.InitData == nil && p.scratch == 0 {
		return false, nil
	}
	if err := os.MkdirAll(p.pod.Dir, 0o700); err != nil {
		return false, err
	}
	var made []string
	undo := func(err error) (bool, error) {
		for _, f := range made {
			os.Remove(f)
		}
		return false, err
	}
	if p.InitData != nil {
		image := filepath.Join(p.pod.Dir, InitDataImage)
		if err := os.WriteFile(image, p.InitData.image, 0o400); err != nil {
			return undo(err)
		}
		made = append(made, image)
	}
	if p.scratch > 0 {
		path := filepath.Join(p.pod.Dir, ScratchImage)
		if err := createSparse(path, p.scratch); err != nil {
			return undo(fmt.Errorf("rootfs.scratch_mib: %d MiB scratch disk: %w", p.scratch>>20, err))
		}
	}
	return true, nil
}

// createSparse makes a new file of size bytes that takes no space yet.
func createSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// Launch prepares the VM with its driver; nothing runs until Start. The
// binaries, guest assets and disks must exist (Create first).
func (p *Plan) Launch() (hypervisor.VM, error) { return driver.New(p.VM) }

// Command is what Launch would start (QEMU argv, one argument a line, or
// the Cloud Hypervisor vm.create body) and the driver's notes. What this
// host lacks becomes a note: the command is worth seeing before the assets
// are installed, or for another host.
func (p *Plan) Command() (lines, notes []string, err error) {
	c, err := driver.Plan(p.VM)
	if err != nil {
		return nil, nil, err
	}
	return c.Command()
}
