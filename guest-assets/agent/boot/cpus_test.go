//go:build linux

package boot

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{
		"":          nil,
		"0\n":       {0},
		"0-1":       {0, 1},
		"0-2,5,7-8": {0, 1, 2, 5, 7, 8},
	} {
		got, err := ParseCPUList(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "1-0", "-1", "0,", "0-99999"} {
		if _, err := ParseCPUList(bad); err == nil {
			t.Errorf("ParseCPUList(%q): no error", bad)
		}
	}
}

func TestOnlineCPUs(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("present", "0-2\n")
	write("online", "0,2\n")
	write("cpu1/online", "0\n")
	got, err := OnlineCPUs(root)
	if err != nil || !reflect.DeepEqual(got, []int{1}) {
		t.Fatalf("OnlineCPUs = %v, %v; want [1]", got, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "cpu1/online")); string(b) != "1" {
		t.Errorf("cpu1/online = %q, want 1", b)
	}
	// One that cannot come up (no online file here) is named; the next
	// one still comes up.
	write("present", "0-3\n")
	write("online", "0\n")
	write("cpu3/online", "0\n")
	got, err = OnlineCPUs(root)
	if err == nil || !strings.Contains(err.Error(), "cpu2") || !reflect.DeepEqual(got, []int{1, 3}) {
		t.Errorf("OnlineCPUs with cpu2 missing = %v, %v; want [1 3] and an error naming cpu2", got, err)
	}
	// All online: nothing to do.
	write("present", "0-2\n")
	write("online", "0-2\n")
	if got, err := OnlineCPUs(root); err != nil || len(got) != 0 {
		t.Errorf("all online: OnlineCPUs = %v, %v", got, err)
	}
}
