package configs

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

var update = flag.Bool("update", false, "rewrite testdata/vm/*.json from the shipped files")

// The resolved VM description of every shipped class is pinned in
// testdata/vm, so a change to a class (what gets launched and measured)
// shows up in review. Regenerate with: go test ./configs -run Golden -update
func TestGoldenVM(t *testing.T) {
	t.Setenv("PATH", "") // keep VMM names bare, independent of this host
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			c, err := loadEmbedded(name, envOf(map[string]string{EnvShareDir: "/opt/coco/share"}))
			if err != nil {
				t.Fatal(err)
			}
			vm, err := c.VM("pod", "/run/coco/pod")
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(vm, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			file := filepath.Join("testdata", "vm", strings.TrimSuffix(name, ".toml")+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s changed; if intended, run with -update. got:\n%s", file, got)
			}
		})
	}
}

// defaults.toml sets, and so documents, every key of the schema.
func TestDefaultsCoverSchema(t *testing.T) {
	b, err := Embedded(defaultsFile)
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		t.Fatal(err)
	}
	var inFile []string
	for _, k := range md.Keys() {
		inFile = append(inFile, k.String())
	}
	var schema []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			name := tomlName(t.Field(i))
			if name == "" {
				continue
			}
			schema = append(schema, prefix+name)
			if t.Field(i).Type.Kind() == reflect.Struct {
				walk(t.Field(i).Type, prefix+name+".")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	sort.Strings(inFile)
	sort.Strings(schema)
	if !reflect.DeepEqual(inFile, schema) {
		t.Errorf("defaults.toml keys differ from the schema:\nfile:   %v\nschema: %v", inFile, schema)
	}
	// Each key line follows a comment (its documentation), directly or
	// through other keys of the same comment group.
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") || !strings.Contains(l, "=") {
			continue
		}
		j := i - 1
		for j >= 0 && strings.Contains(lines[j], "=") && !strings.HasPrefix(strings.TrimSpace(lines[j]), "#") {
			j--
		}
		if j < 0 || !strings.HasPrefix(strings.TrimSpace(lines[j]), "#") {
			t.Errorf("defaults.toml line %d %q has no comment above it", i+1, l)
		}
	}
}
