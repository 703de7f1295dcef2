// Package options decodes what containerd hands the shim about a pod: the
// runtime options (which configuration file to use) and the OCI annotations
// that say which pod a container belongs to. All of it is untrusted input, so
// every decoder returns an error naming the field instead of panicking.
package options

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	runcopts "github.com/containerd/containerd/api/types/runc/options"
	runtimeopts "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/configs"
)

// Annotations containerd's CRI plugin puts on every container spec.
const (
	ContainerTypeAnnotation = "io.kubernetes.cri.container-type"
	SandboxIDAnnotation     = "io.kubernetes.cri.sandbox-id"
	ContainerTypeSandbox    = "sandbox"
	ContainerTypeContainer  = "container"
	// ImageNameAnnotation names the container's image as the pod spec gave
	// it (a guest-pull class pulls it in the guest).
	ImageNameAnnotation = "io.kubernetes.cri.image-name"
)

// ConfigEnv names the configuration file when the runtime options do not
// (configs.EnvConfig: one name for the shim and the tools).
const ConfigEnv = configs.EnvConfig

// maxSpecSize bounds config.json; real specs are a few KiB.
const maxSpecSize = 4 << 20

// Role says where a container sits in its pod.
type Role struct {
	// SandboxID is the pod the container belongs to.
	SandboxID string
	// IsSandbox is true for the pod's sandbox (pause) container, which is
	// the one that brings the VM up in containerd's podsandbox mode.
	IsSandbox bool
}

// Classify finds a container's pod from its annotations. A container without
// CRI annotations (e.g. `ctr run`) is a pod of its own.
func Classify(id string, annotations map[string]string) (Role, error) {
	if err := identifiers.Validate(id); err != nil {
		return Role{}, fmt.Errorf("container id: %w", err)
	}
	typ, hasType := annotations[ContainerTypeAnnotation]
	sid, hasSID := annotations[SandboxIDAnnotation]
	if hasSID {
		if err := identifiers.Validate(sid); err != nil {
			return Role{}, fmt.Errorf("annotation %s: %w", SandboxIDAnnotation, err)
		}
	}
	switch {
	case !hasType && !hasSID:
		return Role{SandboxID: id, IsSandbox: true}, nil
	case !hasType:
		return Role{SandboxID: sid, IsSandbox: sid == id}, nil
	case typ == ContainerTypeSandbox:
		if hasSID && sid != id {
			return Role{}, fmt.Errorf("annotation %s=%q on sandbox container %q: a sandbox container's sandbox id must be its own id: %w",
				SandboxIDAnnotation, sid, id, errdefs.ErrInvalidArgument)
		}
		return Role{SandboxID: id, IsSandbox: true}, nil
	case typ == ContainerTypeContainer:
		if !hasSID {
			return Role{}, fmt.Errorf("container %q has %s=%q but no %s annotation: %w",
				id, ContainerTypeAnnotation, typ, SandboxIDAnnotation, errdefs.ErrInvalidArgument)
		}
		if sid == id {
			return Role{}, fmt.Errorf("annotation %s=%q: a workload container cannot be its own sandbox: %w",
				SandboxIDAnnotation, sid, errdefs.ErrInvalidArgument)
		}
		return Role{SandboxID: sid}, nil
	default:
		return Role{}, fmt.Errorf("annotation %s=%q: want %q or %q: %w",
			ContainerTypeAnnotation, typ, ContainerTypeSandbox, ContainerTypeContainer, errdefs.ErrInvalidArgument)
	}
}

// GroupID is the id of the shim that serves a container: its pod's sandbox
// id, so that one shim (and one VM) serves the whole pod.
func GroupID(id string, annotations map[string]string) (string, error) {
	r, err := Classify(id, annotations)
	if err != nil {
		return "", err
	}
	return r.SandboxID, nil
}

// ParseSpec decodes an OCI runtime spec (a bundle's config.json).
func ParseSpec(data []byte) (*specs.Spec, error) {
	if len(data) > maxSpecSize {
		return nil, fmt.Errorf("config.json is %d bytes, more than the %d allowed: %w", len(data), maxSpecSize, errdefs.ErrInvalidArgument)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("config.json: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return &s, nil
}

// ReadSpec reads bundle/config.json. A bundle without one (containerd's
// sandbox API may create the sandbox bundle without a spec) yields nil, nil.
func ReadSpec(bundle string) (*specs.Spec, error) {
	_, s, err := ReadSpecFile(bundle)
	return s, err
}

// ReadSpecFile is ReadSpec that also returns the bytes it decoded, for
// passing on unchanged (the guest's policy sees what the shim checked). It
// reads at most one byte past maxSpecSize.
func ReadSpecFile(bundle string) ([]byte, *specs.Spec, error) {
	p := filepath.Join(bundle, "config.json")
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSpecSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	s, err := ParseSpec(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	return data, s, nil
}

// NetNSPath is the network namespace the spec asks the container to join,
// "" when it has none of its own.
func NetNSPath(s *specs.Spec) string {
	if s == nil || s.Linux == nil {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// Type names of the runtime options containerd may send.
const (
	runtimeOptionsType = "runtimeoptions.v1.Options"
	runcOptionsType    = "containerd.runc.v1.Options"
)

// ConfigPath extracts the configuration file named by the runtime options.
//
// containerd's CRI plugin turns the handler's `options` table into a
// runtimeoptions.v1.Options (ConfigPath, or the whole table as ConfigBody
// when ConfigPath is unset); `ctr --runtime-config-path` sends the same type.
// runc's options carry no ConfigPath and are ignored. Anything else is an
// error: silently falling back to the default configuration could start a
// pod without the TEE its operator asked for.
func ConfigPath(a *anypb.Any) (string, error) {
	if a == nil || (a.GetTypeUrl() == "" && len(a.GetValue()) == 0) {
		return "", nil
	}
	switch typeName(a.GetTypeUrl()) {
	case runtimeOptionsType:
		var o runtimeopts.Options
		if err := proto.Unmarshal(a.GetValue(), &o); err != nil {
			return "", fmt.Errorf("runtime options (%s): %v: %w", runtimeOptionsType, err, errdefs.ErrInvalidArgument)
		}
		if o.ConfigPath != "" {
			return checkConfigPath(o.ConfigPath)
		}
		return configPathFromBody(o.ConfigBody)
	case runcOptionsType:
		var o runcopts.Options
		if err := proto.Unmarshal(a.GetValue(), &o); err != nil {
			return "", fmt.Errorf("runtime options (%s): %v: %w", runcOptionsType, err, errdefs.ErrInvalidArgument)
		}
		return "", nil
	default:
		return "", fmt.Errorf("runtime options of type %q are not understood; set the handler's options table to { ConfigPath = \"/path/to/configuration.toml\" }: %w",
			a.GetTypeUrl(), errdefs.ErrInvalidArgument)
	}
}

// configPathFromBody reads the handler's options table that containerd
// forwards verbatim when it did not find a ConfigPath key in it.
func configPathFromBody(body []byte) (string, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return "", nil
	}
	var table map[string]any
	if _, err := toml.Decode(string(body), &table); err != nil {
		return "", fmt.Errorf("runtime options table: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var unknown []string
	for k, v := range table {
		if !strings.EqualFold(k, "ConfigPath") && !strings.EqualFold(k, "config_path") {
			unknown = append(unknown, k)
			continue
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("runtime option %s must be a string, got %T: %w", k, v, errdefs.ErrInvalidArgument)
		}
		if s != "" {
			return checkConfigPath(s)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return "", fmt.Errorf("runtime options: unknown key(s) %s; the only option is ConfigPath: %w",
			strings.Join(unknown, ", "), errdefs.ErrInvalidArgument)
	}
	return "", nil
}

func checkConfigPath(p string) (string, error) {
	if strings.ContainsRune(p, 0) || !filepath.IsAbs(p) {
		return "", fmt.Errorf("runtime option ConfigPath %q must be an absolute path to a configuration TOML file: %w", p, errdefs.ErrInvalidArgument)
	}
	return filepath.Clean(p), nil
}

// ResolveConfigPath applies the selection order: runtime option ConfigPath,
// else $COCO_CONFIG, else "" (the embedded default).
func ResolveConfigPath(fromOptions string, getenv func(string) string) (string, error) {
	if fromOptions != "" {
		return fromOptions, nil
	}
	if env := getenv(ConfigEnv); env != "" {
		if strings.ContainsRune(env, 0) || !filepath.IsAbs(env) {
			return "", fmt.Errorf("%s=%q must be an absolute path to a configuration TOML file: %w", ConfigEnv, env, errdefs.ErrInvalidArgument)
		}
		return filepath.Clean(env), nil
	}
	return "", nil
}

// typeName strips the "type.googleapis.com/"-style prefix of a type URL.
func typeName(url string) string {
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		return url[i+1:]
	}
	return url
}
