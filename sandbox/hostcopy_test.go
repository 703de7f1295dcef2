package sandbox

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A host directory in copy mode arrives as its regular files; links out
// of it, FIFOs and sockets are not followed or read (a hostile host may
// plant them), and emptyDirs and file volumes keep their own handling.
func TestHostDirCopied(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "flag"), nil, 0o644)
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "conf"), []byte("x=1"), 0o600)
	secret := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(secret, []byte("host only"), 0o600)
	os.Symlink(secret, filepath.Join(dir, "link"))
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyDir := filepath.Join(t.TempDir(), "pods", "uid", "volumes", emptyDirKind, "scratch")
	os.MkdirAll(emptyDir, 0o755)
	os.WriteFile(filepath.Join(emptyDir, "host-side"), []byte("kept on the host"), 0o644)
	hosts := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644)
	link := filepath.Join(t.TempDir(), "data-link")
	os.Symlink(dir, link)
	sp := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/data", Type: "bind", Source: dir, Options: []string{"rbind", "rw"}},
		{Destination: "/linked", Type: "bind", Source: link, Options: []string{"rbind"}},
		{Destination: "/scratch", Type: "bind", Source: emptyDir, Options: []string{"rbind"}},
		// A file bind mount (the CRI's /etc/hosts) stays a file copy.
		{Destination: "/etc/hosts", Type: "bind", Source: hosts, Options: []string{"rbind", "ro"}},
	}}
	files, err := hostFiles(sp, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range files {
		got[f.Destination] = string(f.Content)
	}
	want := map[string]string{"/data/flag": "", "/data/sub/conf": "x=1", "/linked/flag": "", "/linked/sub/conf": "x=1",
		"/etc/hosts": "127.0.0.1 localhost\n"}
	if !maps.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	// Off (host_dirs = "empty" or "refuse"), nothing of the directory travels.
	if files, err := hostFiles(sp, false); err != nil || len(files) != 1 || files[0].Destination != "/etc/hosts" {
		t.Fatalf("without copy: %v, %v", files, err)
	}
}

// Past the file budget the copy fails naming the mount, never truncates.
func TestHostDirCopyBounded(t *testing.T) {
	dir := t.TempDir()
	for i := range 5 {
		os.WriteFile(filepath.Join(dir, string(rune('a'+i))), make([]byte, 1<<20), 0o644)
	}
	sp := &specs.Spec{Mounts: []specs.Mount{{Destination: "/big", Type: "bind", Source: dir, Options: []string{"rbind"}}}}
	_, err := hostFiles(sp, true)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "/big") {
		t.Fatalf("err %v, want an invalid-argument error naming /big", err)
	}
}

// Copied directories are mounted read-only; other mounts and unknown spec
// fields are left as they were.
func TestReadOnlyHostDirs(t *testing.T) {
	dir := t.TempDir()
	raw := []byte(`{"ociVersion":"1.3.0","futureField":{"a":1},"mounts":[` +
		`{"destination":"/proc","type":"proc","source":"proc"},` +
		`{"destination":"/data","type":"bind","source":"` + dir + `","options":["rbind","rw"]},` +
		`{"destination":"/dev/shm","type":"bind","source":"` + dir + `","options":["rbind"]},` +
		`{"destination":"/etc/hosts","type":"bind","source":"` + filepath.Join(dir, "hosts") + `","options":["rbind","rw"]}]}`)
	os.WriteFile(filepath.Join(dir, "hosts"), nil, 0o644)
	var sp specs.Spec
	if err := json.Unmarshal(raw, &sp); err != nil {
		t.Fatal(err)
	}
	out, err := readOnlyHostDirs(raw, &sp)
	if err != nil {
		t.Fatal(err)
	}
	var got specs.Spec
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if o := got.Mounts[1].Options; !slices.Equal(o, []string{"rbind", "ro"}) {
		t.Errorf("/data options %v, want [rbind ro]", o)
	}
	if o := got.Mounts[2].Options; !slices.Equal(o, []string{"rbind"}) {
		t.Errorf("/dev/shm options %v changed", o)
	}
	if o := got.Mounts[3].Options; !slices.Equal(o, []string{"rbind", "rw"}) {
		t.Errorf("file mount /etc/hosts options %v changed", o)
	}
	if !strings.Contains(string(out), `"futureField":{"a":1}`) {
		t.Errorf("unknown field lost: %s", out)
	}
	if _, err := readOnlyHostDirs([]byte(`{"mounts":{}}`), &sp); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("malformed mounts: %v", err)
	}
	// A raw document whose mount to edit is null (the parsed spec says
	// otherwise): an error, not a panic.
	nulls := `{"mounts":[null,null,null,null]}`
	if _, err := readOnlyHostDirs([]byte(nulls), &sp); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("null mount: %v", err)
	}
}

// A file over the guest's per-file limit fails on the host, naming it and
// the mount, rather than in the guest with a bare index.
func TestHostDirCopyFileTooBig(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "busybox"), make([]byte, maxHostFile+1), 0o755)
	sp := &specs.Spec{Mounts: []specs.Mount{{Destination: "/mnt/image", Type: "bind", Source: dir, Options: []string{"rbind", "ro"}}}}
	_, err := hostFiles(sp, true)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "/mnt/image") || !strings.Contains(err.Error(), "busybox") {
		t.Fatalf("err %v, want an invalid-argument error naming /mnt/image and busybox", err)
	}
}
