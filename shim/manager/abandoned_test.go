package manager

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestAbandoned: the forked shim gives up, and removes its socket, when
// containerd no longer reads its log FIFO; it carries on while it does.
func TestAbandoned(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	sock := filepath.Join(dir, "sock")
	env := func(k string) string {
		if k == AddressEnv {
			return "unix://" + sock
		}
		return ""
	}
	if gone, _ := Abandoned(func(string) string { return "" }); gone {
		t.Fatal("a process without AddressEnv (start, delete) must never count as abandoned")
	}
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// No FIFO at all: containerd removed the bundle's log.
	if gone, why := Abandoned(env); !gone {
		t.Fatal("no log FIFO: not reported abandoned")
	} else if _, err := os.Stat(sock); err == nil {
		t.Errorf("socket left in place: %s", why)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "log"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A FIFO nobody reads.
	if gone, _ := Abandoned(env); !gone {
		t.Error("a log FIFO without reader: not reported abandoned")
	}
	// containerd reading.
	r, err := os.OpenFile(filepath.Join(dir, "log"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if gone, why := Abandoned(env); gone {
		t.Errorf("reported abandoned while containerd reads the log: %s", why)
	}
}
