// Package configs loads the runtime configuration: one TOML file per runtime
// class, applied as an overlay on embedded defaults.
//
// A class file names only what differs from defaults.toml: the loader decodes
// the defaults, decodes the class file on top, refuses keys the schema does
// not know, then validates the combination. Every error names the file, the
// key and what is allowed.
package configs

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor/tee"
)

// The embedded files are read-only, so this is not mutable package state.
//
//go:embed defaults.toml configuration-*.toml
var embedded embed.FS

const (
	defaultsFile = "defaults.toml"
	// DefaultName is the shipped file used when nothing selects another.
	DefaultName = "configuration-qemu-coco-dev.toml"

	// EnvConfig names a configuration file when the runtime options carry no
	// ConfigPath.
	EnvConfig = "COCO_CONFIG"
	// EnvShareDir, when set, replaces hypervisor.share_dir.
	EnvShareDir = "COCO_SHARE_DIR"
)

// Config is the loaded configuration of one runtime class. The toml tags are
// the schema; defaults.toml documents every key.
type Config struct {
	// Path is the file it was loaded from ("" for an embedded file).
	Path string `toml:"-"`
	// Name is the runtime class, from the file name
	// (configuration-qemu-snp.toml → "qemu-snp").
	Name string `toml:"-"`

	Hypervisor Hypervisor `toml:"hypervisor"`
	TEE        TEE        `toml:"tee"`
	Agent      Agent      `toml:"agent"`
	Runtime    Runtime    `toml:"runtime"`
	Rootfs     Rootfs     `toml:"rootfs"`
	Volumes    Volumes    `toml:"volumes"`
	Network    Network    `toml:"network"`
}

// Network is the [network] table.
type Network struct {
	// Interfaces says what the guest gets of the pod's network namespace:
	// "cni" (a NIC per interface the CNI plugin made, bridged to it with a
	// tap and tc redirects) or "none" (no NIC: the guest has loopback
	// only; port-forward still works, it travels over vsock).
	Interfaces string `toml:"interfaces"`
}

// Hypervisor is the [hypervisor] table.
type Hypervisor struct {
	Driver       string   `toml:"driver"`
	Path         string   `toml:"path"`
	Machine      string   `toml:"machine"`
	Accel        string   `toml:"accel"`
	CPUModel     string   `toml:"cpu_model"`
	VCPUs        uint32   `toml:"vcpus"`
	MemoryMiB    uint32   `toml:"memory_mib"`
	Kernel       string   `toml:"kernel"`
	Initrd       string   `toml:"initrd"`
	ToolsImage   string   `toml:"tools_image"`
	Firmware     string   `toml:"firmware"`
	IGVM         string   `toml:"igvm"`
	KernelParams string   `toml:"kernel_params"`
	BootTimeout  Duration `toml:"boot_timeout"`
	// ConsoleLogKiB caps the guest console log on the host.
	ConsoleLogKiB uint32 `toml:"console_log_kib"`
	// MemoryHugePages backs guest memory with transparent huge pages.
	MemoryHugePages bool `toml:"memory_huge_pages"`
	// ShareDir is absolute once loaded; COCO_SHARE_DIR has been applied.
	ShareDir string `toml:"share_dir"`
	Vsock    Vsock  `toml:"vsock"`
}

// Vsock is the [hypervisor.vsock] table.
type Vsock struct {
	Mode       string `toml:"mode"`
	DaemonPath string `toml:"daemon_path"`
}

// TEE is the [tee] table. Only the option table matching Kind is used; the
// option types are the driver's own, which check themselves (Validate).
type TEE struct {
	Kind string         `toml:"kind"`
	SEV  tee.SEVOptions `toml:"sev"`
	SNP  tee.SNPOptions `toml:"snp"`
	TDX  tee.TDXOptions `toml:"tdx"`
}

// Agent is the [agent] table.
type Agent struct {
	// Policy is a Rego file; absolute once loaded, "" for the built-in default.
	Policy string `toml:"policy"`
}

// Runtime is the [runtime] table.
type Runtime struct {
	AnnotationsAllowed []string `toml:"annotations_allowed"`
	// InitData is an init-data TOML file; absolute once loaded, "" for none.
	InitData string `toml:"initdata"`
}

// Volumes is the [volumes] table.
type Volumes struct {
	// HostDirs says what a bind mount of a host directory that is neither
	// a kubelet file volume nor an emptyDir (hostPath, a persistent
	// volume) becomes: "refuse" (CreateContainer fails naming the mount),
	// "empty" (an empty guest directory shared by the pod), "copy" (its
	// regular files copied in at creation, within the file budget, and
	// mounted read-only), or "" for the class's default (refuse with a
	// TEE, empty without).
	HostDirs string `toml:"host_dirs"`
}

// Rootfs is the [rootfs] table.
type Rootfs struct {
	// Mkfs is the mkfs.erofs binary that builds container root filesystem
	// images.
	Mkfs string `toml:"mkfs"`
	// GuestPull has the guest pull each container's image itself (from the
	// CRI image name); the host builds no root filesystem image.
	GuestPull bool `toml:"guest_pull"`
	// ScratchMiB sizes the sparse scratch disk a guest-pull guest encrypts
	// and swaps to (0: none; pulled images then live in guest memory).
	ScratchMiB int `toml:"scratch_mib"`
}

// Duration is a TOML duration string such as "30s". Bare integers are
// refused: TOML has no unit for them and nanoseconds are never meant.
type Duration time.Duration

// UnmarshalTOML implements toml.Unmarshaler.
func (d *Duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("want a duration string such as \"30s\" or \"500ms\", not a TOML %T", v)
	}
	x, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration: use a number with a unit, such as \"30s\" or \"500ms\"", s)
	}
	*d = Duration(x)
	return nil
}

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// Error is a configuration problem. It unwraps to
// errdefs.ErrInvalidArgument.
type Error struct {
	File string // the file, or "embedded NAME"
	Key  string // dotted TOML key, e.g. "hypervisor.machine"
	Msg  string // what is wrong and what is allowed
}

func (e *Error) Error() string {
	if e.Key == "" {
		return e.File + ": " + e.Msg
	}
	return e.File + ": " + e.Key + ": " + e.Msg
}

// Unwrap makes errdefs.IsInvalidArgument true.
func (e *Error) Unwrap() error { return errdefs.ErrInvalidArgument }

// Load reads a configuration file and applies it over the defaults. An
// empty path loads the embedded coco-dev default. A missing file is
// errdefs.ErrNotFound; a bad file is an *Error (errdefs.ErrInvalidArgument).
func Load(path string) (*Config, error) { return load(path, os.Getenv) }

// LoadEmbedded loads a shipped file by its name (see Names).
func LoadEmbedded(name string) (*Config, error) { return loadEmbedded(name, os.Getenv) }

// Default returns the embedded coco-dev configuration. The shipped files are
// tested, so a failure here is a build defect and panics.
func Default() *Config {
	c, err := Load("")
	if err != nil {
		panic(fmt.Sprintf("configs: embedded default is broken: %v", err))
	}
	return c
}

// Select picks the configuration of a pod: the runtime option ConfigPath when
// set, else the file named by $COCO_CONFIG, else the embedded default.
func Select(configPath string) (*Config, error) { return selectConfig(configPath, os.Getenv) }

func selectConfig(configPath string, getenv func(string) string) (*Config, error) {
	if configPath == "" {
		configPath = getenv(EnvConfig)
	}
	return load(configPath, getenv)
}

// Names lists the shipped runtime class files, sorted.
func Names() []string {
	ents, err := fs.Glob(embedded, "configuration-*.toml")
	if err != nil {
		panic(err) // the pattern is constant
	}
	sort.Strings(ents)
	return ents
}

// LoadClass loads a shipped runtime class by its name ("qemu-snp") or file
// name ("configuration-qemu-snp.toml").
func LoadClass(class string) (*Config, error) {
	return LoadEmbedded("configuration-" + className(class) + ".toml")
}

// LoadClassOrFile loads the shipped class named class when it is set, else
// what Select picks for path (the tools' --class and --config).
func LoadClassOrFile(class, path string) (*Config, error) {
	if class != "" {
		return LoadClass(class)
	}
	return Select(path)
}

// ClassNames are the shipped runtime classes, by name ("qemu-snp", ...).
func ClassNames() []string {
	var out []string
	for _, n := range Names() {
		out = append(out, className(n))
	}
	return out
}

// Embedded returns the bytes of a shipped file (one of Names, or
// "defaults.toml"); an unknown name is errdefs.ErrNotFound.
func Embedded(name string) ([]byte, error) {
	if strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("configs: %q: %w: want a file name such as %s", name, errdefs.ErrNotFound, DefaultName)
	}
	b, err := embedded.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("configs: no embedded file %q (have %s): %w",
			name, strings.Join(append(Names(), defaultsFile), ", "), errdefs.ErrNotFound)
	}
	return b, nil
}

func load(path string, getenv func(string) string) (*Config, error) {
	if path == "" {
		return loadEmbedded(DefaultName, getenv)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("configs: configuration file %s: %w (check the runtime option ConfigPath or $%s)", path, errdefs.ErrNotFound, EnvConfig)
	}
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	c, err := parse(path, data, getenv)
	if err != nil {
		return nil, err
	}
	c.Path = path
	return c, nil
}

func loadEmbedded(name string, getenv func(string) string) (*Config, error) {
	if name == defaultsFile {
		return nil, fmt.Errorf("configs: %s is the base of every class, not a class: %w", name, errdefs.ErrInvalidArgument)
	}
	data, err := Embedded(name)
	if err != nil {
		return nil, err
	}
	return parse("embedded "+name, data, getenv)
}

// parse decodes the defaults, then data on top, and validates the result.
// file names the source in errors.
func parse(file string, data []byte, getenv func(string) string) (*Config, error) {
	c := &Config{Name: className(file)}
	def, err := embedded.ReadFile(defaultsFile)
	if err != nil {
		return nil, err
	}
	if err := overlay(c, "embedded "+defaultsFile, def); err != nil {
		return nil, err
	}
	if err := overlay(c, file, data); err != nil {
		return nil, err
	}
	if d := getenv(EnvShareDir); d != "" {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, &Error{File: "$" + EnvShareDir, Msg: err.Error()}
		}
		c.Hypervisor.ShareDir = abs
	}
	if err := c.validate(file); err != nil {
		return nil, err
	}
	c.resolvePaths()
	return c, nil
}

// className turns ".../configuration-qemu-snp.toml" into "qemu-snp"; other
// file names give their base name without extension.
func className(file string) string {
	base := filepath.Base(strings.TrimPrefix(file, "embedded "))
	base = strings.TrimSuffix(base, filepath.Ext(base))
	return strings.TrimPrefix(base, "configuration-")
}

// overlay decodes one TOML document into c, leaving keys it does not name
// untouched, and refuses keys outside the schema.
func overlay(c *Config, file string, data []byte) error {
	md, err := toml.NewDecoder(strings.NewReader(string(data))).Decode(c)
	if err != nil {
		return decodeError(file, err)
	}
	var errs []error
	undecoded := md.Undecoded()
	isUndecoded := make(map[string]bool, len(undecoded))
	for _, k := range undecoded {
		isUndecoded[k.String()] = true
	}
	// BurntSushi/toml falls back to case-insensitive field matching; the
	// schema is lower case, and accepting "VCPUS" beside "vcpus" would let the
	// random map order pick the winner.
	for _, k := range md.Keys() {
		if !isUndecoded[k.String()] && !knownKey(k) {
			errs = append(errs, &Error{File: file, Key: k.String(),
				Msg: fmt.Sprintf("keys are case-sensitive; write %q", strings.ToLower(k[len(k)-1]))})
		}
	}
	reported := map[string]bool{}
	for _, k := range undecoded {
		if parentReported(reported, k) {
			continue
		}
		reported[k.String()] = true
		if why, ok := removedKeys()[k.String()]; ok {
			errs = append(errs, &Error{File: file, Key: k.String(), Msg: "removed key: " + why})
			continue
		}
		table, allowed := allowedKeys(k[:len(k)-1])
		where := "the top level"
		if table != "" {
			where = "[" + table + "]"
		}
		errs = append(errs, &Error{File: file, Key: k.String(),
			Msg: fmt.Sprintf("unknown key; %s allows: %s", where, strings.Join(allowed, ", "))})
	}
	return errors.Join(errs...)
}

// removedKeys are keys older files may still hold, with what replaces them:
// each was documented but never read by the shim.
func removedKeys() map[string]string {
	return map[string]string{
		"runtime.state_dir": "the shim keeps every pod's state under $COCO_RUN_DIR (default /run/coco), whatever the class; " +
			"delete the line, and set COCO_RUN_DIR in the shim's environment to move it",
		"runtime.log_level": "the shim logs at containerd's level (containerd's [debug] level, passed to the shim as -debug); delete the line",
		"rootfs.fstype":     "container root filesystem images are always EROFS (rootfs.mkfs names mkfs.erofs); delete the line",
		"agent.dial_timeout": "hypervisor.boot_timeout bounds the wait for the guest agent, from power-on; delete the line " +
			"and set hypervisor.boot_timeout instead",
	}
}

// tomlErr matches the decoder's type errors, which are not ParseErrors.
var tomlErr = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

// decodeError rewrites the decoder's errors into "file: key: line N: msg".
func decodeError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) && pe.LastKey != "" {
		return &Error{File: file, Key: pe.LastKey, Msg: fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message)}
	}
	if errors.As(err, &pe) {
		return &Error{File: file, Msg: fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message)}
	}
	if m := tomlErr.FindStringSubmatch(err.Error()); m != nil {
		msg := m[3]
		if m[1] != "" {
			msg = "line " + m[1] + ": " + msg
		}
		return &Error{File: file, Key: m[2], Msg: msg}
	}
	return &Error{File: file, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

func parentReported(reported map[string]bool, k toml.Key) bool {
	for i := 1; i < len(k); i++ {
		if reported[k[:i].String()] {
			return true
		}
	}
	return false
}

// knownKey reports whether k names a schema field with exactly its case.
func knownKey(k toml.Key) bool {
	t := reflect.TypeOf(Config{})
	for _, part := range k {
		if t.Kind() != reflect.Struct {
			return false
		}
		f, ok := fieldByTag(t, part)
		if !ok {
			return false
		}
		t = f.Type
	}
	return true
}

// allowedKeys lists the keys of the table at path, or of the deepest known
// table on the way there.
func allowedKeys(path toml.Key) (table string, keys []string) {
	t := reflect.TypeOf(Config{})
	var known toml.Key
	for _, part := range path {
		f, ok := fieldByTag(t, part)
		if !ok || f.Type.Kind() != reflect.Struct {
			break
		}
		t = f.Type
		known = append(known, part)
	}
	for i := 0; i < t.NumField(); i++ {
		if tag := tomlName(t.Field(i)); tag != "" {
			keys = append(keys, tag)
		}
	}
	return known.String(), keys
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if tomlName(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func tomlName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if tag == "-" {
		return ""
	}
	return tag
}
