package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// introducedIn says which QEMU version first has a type, for skip messages
// (reference/specs.md §3; confidential-guest-support types from 6.0).
var introducedIn = map[string]string{
	"sev-guest":     "2.12",
	"sev-snp-guest": "9.1",
	"tdx-guest":     "10.1",
	"s390-pv-guest": "6.0 (qemu-system-s390x)",
	"pef-guest":     "6.0 (qemu-system-ppc64)",
}

// qmpStdio is a QEMU started with `-M none -qmp stdio`: nothing to boot,
// just the type registry to ask.
type qmpStdio struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Reader
	version string
}

func startQMPStdio(t *testing.T, bin string) *qmpStdio {
	t.Helper()
	cmd := exec.Command(bin, "-M", "none", "-nodefaults", "-display", "none", "-qmp", "stdio")
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	q := &qmpStdio{cmd: cmd, in: in, out: bufio.NewReaderSize(outPipe, 1<<20)}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	var greeting struct {
		QMP struct {
			Version struct {
				QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
			} `json:"version"`
		} `json:"QMP"`
	}
	if err := q.read(&greeting); err != nil {
		t.Fatalf("%s greeting: %v", bin, err)
	}
	v := greeting.QMP.Version.QEMU
	q.version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	if _, err := q.call("qmp_capabilities", nil); err != nil {
		t.Fatal(err)
	}
	return q
}

func (q *qmpStdio) read(v any) error {
	for {
		line, err := q.out.ReadBytes('\n')
		if err != nil {
			return err
		}
		var probe struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(line, &probe) == nil && probe.Event != "" {
			continue
		}
		return json.Unmarshal(line, v)
	}
}

// call runs a command; a QMP error comes back as an error.
func (q *qmpStdio) call(cmd string, args any) (json.RawMessage, error) {
	b, _ := json.Marshal(map[string]any{"execute": cmd, "arguments": args})
	if args == nil {
		b, _ = json.Marshal(map[string]any{"execute": cmd})
	}
	if _, err := q.in.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	var r struct {
		Return json.RawMessage `json:"return"`
		Error  *struct{ Class, Desc string }
	}
	if err := q.read(&r); err != nil {
		return nil, err
	}
	if r.Error != nil {
		return nil, fmt.Errorf("%s: %s", r.Error.Class, r.Error.Desc)
	}
	return r.Return, nil
}

// props lists the property names of a QOM type (objects, machines) or of a
// device type; nil with an error when the type does not exist.
func (q *qmpStdio) props(command, typename string) (map[string]bool, error) {
	raw, err := q.call(command, map[string]any{"typename": typename})
	if err != nil {
		return nil, err
	}
	var list []struct{ Name string }
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, p := range list {
		m[p.Name] = true
	}
	return m, nil
}

// machineType maps a machine name or alias (q35) to its QOM type name.
func (q *qmpStdio) machineType(name string) (string, error) {
	raw, err := q.call("query-machines", nil)
	if err != nil {
		return "", err
	}
	var ms []struct{ Name, Alias string }
	if err := json.Unmarshal(raw, &ms); err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.Name == name || m.Alias == name {
			return m.Name + "-machine", nil
		}
	}
	return "", fmt.Errorf("machine %q unknown to this QEMU", name)
}

// emitted is one -object/-device/-machine option of a golden argv.
type emitted struct {
	flag, typ string
	keys      []string
}

// parseEmitted splits the options the builder emits into type and keys.
// JSON -object values are decoded; keyval ones are split on single commas.
func parseEmitted(args []string) ([]emitted, error) {
	var out []emitted
	for i := 1; i+1 < len(args); i++ {
		flag, val := args[i], args[i+1]
		if flag != "-object" && flag != "-device" && flag != "-machine" {
			continue
		}
		i++
		if strings.HasPrefix(val, "{") {
			var m map[string]any
			if err := json.Unmarshal([]byte(val), &m); err != nil {
				return nil, fmt.Errorf("%s %s: %w", flag, val, err)
			}
			e := emitted{flag: flag, typ: fmt.Sprint(m["qom-type"])}
			for k := range m {
				if k != "qom-type" && k != "id" {
					e.keys = append(e.keys, k)
				}
			}
			sort.Strings(e.keys)
			out = append(out, e)
			continue
		}
		parts := strings.Split(strings.ReplaceAll(val, ",,", "\x00"), ",")
		e := emitted{flag: flag, typ: parts[0]}
		for _, p := range parts[1:] {
			k, _, _ := strings.Cut(p, "=")
			// id and bus are qdev/QOM-generic, not properties of the type.
			if k != "id" && k != "bus" {
				e.keys = append(e.keys, k)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// TestIntrospection asks the installed QEMU binaries about every -object,
// -device and -machine type and property the builder emits for the golden
// table, and fails on a property QEMU does not know. Types this QEMU lacks
// are skipped, naming the version that has them.
func TestIntrospection(t *testing.T) {
	byBinary := map[string][]emitted{}
	for name, cfg := range tableConfigs() {
		vm, err := newVM(cfg, fakeHost(false), true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		args, _, err := vm.Command()
		if err != nil {
			t.Fatal(err)
		}
		em, err := parseEmitted(args)
		if err != nil {
			t.Fatal(err)
		}
		bin := vm.plan.machine.binary
		byBinary[bin] = append(byBinary[bin], em...)
	}
	for bin, ems := range byBinary {
		t.Run(bin, func(t *testing.T) {
			if _, err := exec.LookPath(bin); err != nil {
				t.Skipf("%s not installed; would check %d emitted options against its QOM registry", bin, len(ems))
			}
			q := startQMPStdio(t, bin)
			// Guard: the check must be able to fail. virtio-blk has no
			// read-only property (the block node carries it).
			if bin == "qemu-system-x86_64" {
				if p, err := q.props("device-list-properties", "virtio-blk-pci"); err != nil || p["read-only"] || !p["serial"] {
					t.Fatalf("introspection cannot tell known from unknown properties: %v %v", p, err)
				}
			}
			checked := map[string]bool{}
			for _, e := range ems {
				key := e.flag + " " + e.typ + " " + strings.Join(e.keys, ",")
				if checked[key] {
					continue
				}
				checked[key] = true
				var props map[string]bool
				var err error
				typ := e.typ
				switch e.flag {
				case "-object":
					props, err = q.props("qom-list-properties", typ)
				case "-device":
					props, err = q.props("device-list-properties", typ)
				case "-machine":
					if typ, err = q.machineType(e.typ); err == nil {
						props, err = q.props("qom-list-properties", typ)
					}
				}
				if err != nil {
					if v, ok := introducedIn[e.typ]; ok {
						t.Logf("SKIP %s %s: QEMU %s lacks it (needs %s): %v", e.flag, e.typ, q.version, v, err)
						continue
					}
					t.Errorf("%s %s: QEMU %s: %v", e.flag, e.typ, q.version, err)
					continue
				}
				for _, k := range e.keys {
					if !props[k] {
						t.Errorf("%s %s: QEMU %s has no property %q", e.flag, e.typ, q.version, k)
					}
				}
			}
			t.Logf("QEMU %s: checked %d distinct options", q.version, len(checked))
		})
	}
}

// instantiate starts bin with one -object and nothing else, which makes
// QEMU parse and check every value (number syntax, base64 lengths such as
// host-data's 32 bytes), and returns QEMU's complaint, if any.
func instantiate(bin, object string) error {
	cmd := exec.Command(bin, "-M", "none", "-nodefaults", "-display", "none", "-object", object, "-qmp", "stdio")
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"quit"}` + "\n")
	// A memory file is inherited (plan.ramFile): give fds 3..N a memfd.
	if _, after, ok := strings.Cut(object, "mem-path=/proc/self/fd/"); ok {
		n, err := strconv.Atoi(strings.SplitN(after, ",", 2)[0])
		if err != nil || n < 3 {
			return fmt.Errorf("mem-path fd in %q", object)
		}
		f, err := OpenRAM("/nonexistent", 512) // no mount there: the memfd fallback
		if f == nil {
			return err
		}
		defer f.Close()
		for range n - 2 {
			cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		}
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		return fmt.Errorf("warning: %s", s)
	}
	return nil
}

// TestObjectsInstantiate creates every -object the golden table emits for
// x86 in the installed QEMU, so values are checked as well as names.
func TestObjectsInstantiate(t *testing.T) {
	const bin = "qemu-system-x86_64"
	if _, err := exec.LookPath(bin); err != nil {
		t.Skipf("%s not installed; would create every emitted -object in it", bin)
	}
	// Guard: QEMU must reject a host-data that is not 32 bytes.
	if err := instantiate(bin, "sev-snp-guest,id=t,cbitpos=51,reduced-phys-bits=1,host-data=AAAA"); err == nil {
		t.Fatal("QEMU accepted a 3-byte host-data: this test could not catch a bad value")
	}
	seen := map[string]bool{}
	for name, cfg := range tableConfigs() {
		vm, err := newVM(cfg, fakeHost(false), true)
		if err != nil {
			t.Fatal(err)
		}
		if vm.plan.machine.binary != bin {
			continue
		}
		args, _, _ := vm.Command()
		for i := 1; i+1 < len(args); i++ {
			if args[i] != "-object" || seen[args[i+1]] {
				continue
			}
			obj := args[i+1]
			seen[obj] = true
			typ := strings.SplitN(obj, ",", 2)[0]
			if strings.HasPrefix(obj, "{") {
				var m struct {
					QOMType string `json:"qom-type"`
				}
				json.Unmarshal([]byte(obj), &m)
				typ = m.QOMType
			}
			if err := instantiate(bin, obj); err != nil {
				if v, ok := introducedIn[typ]; ok && (strings.Contains(err.Error(), "invalid object type") || strings.Contains(err.Error(), "does not accept value '"+typ+"'")) {
					t.Logf("SKIP %s (%s): this QEMU lacks it (needs %s)", typ, name, v)
					continue
				}
				t.Errorf("%s: -object %s: %v", name, obj, err)
			}
		}
	}
	t.Logf("created %d distinct objects", len(seen))
}
