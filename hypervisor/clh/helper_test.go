package clh

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary doubles as a fake cloud-hypervisor: a wrapper script
// (fakeBinary) re-executes it with fakeHelperEnv set, and TestMain then runs
// the fake VMM instead of the tests. It checks its own argv, serves the
// schema-checking API on the --api-socket path, answers hybrid vsock on the
// configured vsock socket after vm.boot, writes to the serial file, and
// appends every API call to the file named by fakeCallsEnv.
const (
	fakeHelperEnv = "CLH_TEST_FAKE_VMM"
	fakeModeEnv   = "CLH_TEST_FAKE_MODE"
	fakeCallsEnv  = "CLH_TEST_FAKE_CALLS"

	modeNormal         = ""
	modeExitEarly      = "exit-early"      // print an error and exit 1 before serving
	modeIgnoreShutdown = "ignore-shutdown" // never exit on request
	modePowerOff       = "poweroff"        // guest powers off shortly after boot
	modeNoAgent        = "no-agent"        // nothing listens on guest port 1024
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeHelperEnv) == "1" {
		os.Exit(runFakeVMM(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runFakeVMM(args []string) int {
	mode := os.Getenv(fakeModeEnv)
	if mode == modeExitEarly {
		fmt.Fprintln(os.Stderr, "Error: fake cloud-hypervisor refuses to start")
		return 1
	}
	if len(args) != 2 || args[0] != "--api-socket" || !strings.HasPrefix(args[1], "path=") {
		fmt.Fprintf(os.Stderr, "fake cloud-hypervisor: unexpected arguments %q, want --api-socket path=<socket>\n", args)
		return 2
	}
	socket := strings.TrimPrefix(args[1], "path=")
	schema, err := loadOpenAPI("testdata/openapi-subset.json")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	callLog, err := os.OpenFile(os.Getenv(fakeCallsEnv), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer callLog.Close()

	exit := make(chan int, 1)
	f := newFakeVMM(schema)
	f.ignoreShutdown = mode == modeIgnoreShutdown
	f.onVMMShutdown = func() { exit <- 0 }
	var (
		vsockMu sync.Mutex
		vsockLn net.Listener
	)
	f.onBoot = func(cfg vmConfig) {
		if cfg.Serial != nil && cfg.Serial.File != "" {
			os.WriteFile(cfg.Serial.File, []byte("fake guest: booted\nfake guest: waiting for the host\n"), 0o600)
		}
		if cfg.Vsock != nil {
			ln, err := serveHybridVsock(cfg.Vsock.Socket, mode != modeNoAgent)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				exit <- 3
				return
			}
			vsockMu.Lock()
			vsockLn = ln
			vsockMu.Unlock()
		}
		if mode == modePowerOff {
			time.Sleep(100 * time.Millisecond)
			exit <- 0
		}
	}
	// The descriptors a NIC came with, as the files they refer to, so a
	// test can tell that this process got the very taps it passed.
	f.onNet = func(n fakeNIC) {
		fmt.Fprintf(callLog, "fds %s %s\n", n.Config.ID, strings.Join(n.Files, ","))
	}
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(callLog, "%s %s\n", r.Method, strings.TrimPrefix(r.URL.Path, "/api/v1/"))
		f.ServeHTTP(w, r)
	})
	srv, err := serveAPI(logged, socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Fprintln(os.Stderr, "fake cloud-hypervisor: API on", socket)
	code := <-exit
	// Let the answer to vmm.shutdown reach the client before exiting.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	vsockMu.Lock()
	if vsockLn != nil {
		vsockLn.Close()
	}
	vsockMu.Unlock()
	return code
}

// fakeBinary writes an executable script that runs this test binary as the
// fake VMM in the given mode, logging API calls to the returned file.
func fakeBinary(t *testing.T, mode string) (path, calls string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls.log")
	path = filepath.Join(dir, "cloud-hypervisor")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 %s=%q %s=%q exec %q \"$@\"\n",
		fakeHelperEnv, fakeModeEnv, mode, fakeCallsEnv, calls, self)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, calls
}

func readCalls(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
