package policy

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/coco-runtime/coco/virtcontainers/initdata"
	"github.com/coco-runtime/coco/virtcontainers/policy/genpolicy"
)

const generateUsage = `Usage: containerd-shim-coco-v2 policy generate -f POD.yaml [options]

Writes an agent policy pinning each workload of POD.yaml into init-data and
prints the pod annotation (or, with --inject, writes it into POD.yaml).
Images are read from their registries, or with --image-layout from an OCI
image layout (a directory or a .tar of one) for offline use.

`

type generateFlags struct {
	file, layout, namespace, kubeletRoot, sandboxImage string
	aaFile, cdhFile, algorithm, output                 string
	allowExec, serviceLinkPrefixes                     multiFlag
	allowAllExec, allowLogs, inject, printRego         bool
	engine                                             string
}

func generateMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f generateFlags
	fs := newFlagSet("policy generate", stderr, generateUsage)
	fs.StringVar(&f.file, "f", "", "the workload YAML (- for stdin)")
	fs.StringVar(&f.layout, "image-layout", "", "read images from this OCI image layout (directory or .tar) instead of registries")
	fs.StringVar(&f.namespace, "namespace", "default", "namespace of objects that name none")
	fs.StringVar(&f.kubeletRoot, "kubelet-root", "/var/lib/kubelet", "the kubelet's --root-dir (volume mount sources live under it)")
	fs.StringVar(&f.sandboxImage, "sandbox-image", "", "pin the sandbox (pause) image name containerd is configured with")
	fs.StringVar(&f.aaFile, "aa-toml", "", "aa.toml to put into init-data (attestation agent: KBS URL, certificate)")
	fs.StringVar(&f.cdhFile, "cdh-toml", "", "cdh.toml to put into init-data (confidential data hub)")
	fs.StringVar(&f.algorithm, "algorithm", "sha384", "init-data digest algorithm: sha256, sha384, sha512")
	fs.StringVar(&f.output, "o", "", "write the init-data TOML here (a directory when the input has several workloads)")
	fs.Var(&f.allowExec, "allow-exec", "a command the host may exec in every container, e.g. 'sh -c date' (repeatable)")
	fs.Var(&f.serviceLinkPrefixes, "service-link-prefix", "allow only the service-link variables of services with this prefix, e.g. REDIS_ (repeatable; default: any service)")
	fs.BoolVar(&f.allowAllExec, "allow-all-exec", false, "DEBUGGING ONLY: let the host exec ANY command in the pod's containers")
	fs.BoolVar(&f.allowLogs, "allow-logs", false, "let the host read the containers' output (kubectl logs)")
	fs.BoolVar(&f.inject, "inject", false, "write the annotation into the YAML file in place (keeps everything else as it was)")
	fs.BoolVar(&f.printRego, "print-rego", false, "print the generated Rego instead of the annotation")
	fs.StringVar(&f.engine, "engine", "", "coco-policy to compile the policy with as a check (default: found next to this binary or on PATH; skipped if none)")
	if code, done := parse(fs, args); done {
		return code
	}
	if f.file == "" {
		fmt.Fprintln(stderr, "policy generate: -f is required")
		return exitUsage
	}
	if f.inject && f.file == "-" {
		fmt.Fprintln(stderr, "policy generate: --inject needs a file, not stdin")
		return exitUsage
	}
	if err := f.run(ctx, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "policy generate: %v\n", err)
		return exitError
	}
	return exitOK
}

func (f *generateFlags) run(ctx context.Context, stdout, stderr io.Writer) error {
	src, err := readFileOrStdin(f.file)
	if err != nil {
		return err
	}
	in, err := genpolicy.Load(bytes.NewReader(src), f.namespace)
	if err != nil {
		return err
	}
	var aa, cdh []byte
	if f.aaFile != "" {
		if aa, err = os.ReadFile(f.aaFile); err != nil {
			return err
		}
	}
	if f.cdhFile != "" {
		if cdh, err = os.ReadFile(f.cdhFile); err != nil {
			return err
		}
	}
	execs := make([][]string, 0, len(f.allowExec))
	for _, line := range f.allowExec {
		argv, err := genpolicy.SplitCommand(line)
		if err != nil {
			return fmt.Errorf("--allow-exec: %w", err)
		}
		execs = append(execs, argv)
	}
	images, cleanup, err := f.images()
	if err != nil {
		return err
	}
	defer cleanup()
	o := genpolicy.Options{Images: images, KubeletRoot: f.kubeletRoot, AllowExec: execs, AllowAllExec: f.allowAllExec,
		AllowLogs: f.allowLogs, ServiceLinkPrefixes: f.serviceLinkPrefixes, SandboxImage: f.sandboxImage}
	if f.allowAllExec {
		fmt.Fprintln(stderr, "WARNING: --allow-all-exec: the host may run ANY command in these containers; debugging only")
	}
	for _, s := range in.Skipped {
		fmt.Fprintf(stderr, "note: %s documents carry no pod; left alone\n", s)
	}
	annotations := map[*genpolicy.Workload]string{}
	for _, w := range in.Workloads {
		p, err := genpolicy.Generate(ctx, in, w, o)
		if err != nil {
			return err
		}
		for _, warn := range p.Warnings {
			fmt.Fprintf(stderr, "warning: %s %s: %s\n", w.Kind, w.Name, warn)
		}
		if err := verify(ctx, f.engine, p.Rego); err != nil {
			return fmt.Errorf("%s %s: %w", w.Kind, w.Name, err)
		}
		raw, err := genpolicy.InitData(p.Rego, string(aa), string(cdh), f.algorithm)
		if err != nil {
			return err
		}
		if err := f.writeTOML(w, len(in.Workloads), raw); err != nil {
			return err
		}
		annotations[w] = genpolicy.Annotation(raw)
		switch {
		case f.printRego:
			fmt.Fprint(stdout, p.Rego)
		case !f.inject:
			fmt.Fprintf(stdout, "# %s %s/%s: pod annotation (%d bytes of init-data)\n%s: %s\n", w.Kind, w.Namespace, w.Name, len(raw), initdata.AnnotationKey, annotations[w])
		}
	}
	if f.inject {
		out, err := genpolicy.Inject(src, in, initdata.AnnotationKey, annotations)
		if err != nil {
			return err
		}
		if err := writeFileKeepMode(f.file, out); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "%s: set %s on %d workload(s)\n", f.file, initdata.AnnotationKey, len(annotations))
	}
	return nil
}

func (f *generateFlags) writeTOML(w *genpolicy.Workload, n int, raw []byte) error {
	if f.output == "" {
		return nil
	}
	path := f.output
	if n > 1 {
		if err := os.MkdirAll(f.output, 0o755); err != nil {
			return err
		}
		path = filepath.Join(f.output, fmt.Sprintf("%s-%s.initdata.toml", strings.ToLower(w.Kind), w.Name))
	}
	return os.WriteFile(path, raw, 0o644)
}

func writeFileKeepMode(path string, data []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".coco-policy.tmp"
	if err := os.WriteFile(tmp, data, st.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// images picks the image source; a layout given as a .tar is unpacked into
// a temporary directory first.
func (f *generateFlags) images() (genpolicy.Images, func(), error) {
	if f.layout == "" {
		return genpolicy.Registry{}, func() {}, nil
	}
	st, err := os.Stat(f.layout)
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		return genpolicy.Layout{Dir: f.layout}, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "coco-image-layout-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	if err := untar(f.layout, dir); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("--image-layout %s: %w", f.layout, err)
	}
	return genpolicy.Layout{Dir: dir}, cleanup, nil
}

// untar unpacks the regular files and directories of an OCI layout
// archive; any other entry, or a name leaving dir, is refused.
func untar(archive, dir string) error {
	fh, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer fh.Close()
	tr := tar.NewReader(fh)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q leaves the layout", h.Name)
		}
		dst := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: type %c is not in an OCI layout", h.Name, h.Typeflag)
		}
	}
}
