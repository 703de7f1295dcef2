package clh

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeVMM is a stand-in for Cloud Hypervisor's HTTP API. It checks every
// request against the transcribed schema (unknown operation → 404, wrong
// method → 400, body field unknown or of the wrong type → 400), mimics the
// VMM's own config validation for the fields the driver sends, keeps the
// VM state machine (create → boot → pause/resume → shutdown), records the
// call sequence, and checks its own answers against the schema too.
type fakeVMM struct {
	schema *openAPI

	// Hooks, set before serving.
	onBoot         func(cfg vmConfig)     // after a successful vm.boot
	onNet          func(n fakeNIC)        // after a successful vm.add-net
	onVMMShutdown  func()                 // after vmm.shutdown was answered
	forced         map[string]forcedReply // op → canned answer, bypassing checks on the answer
	ignoreShutdown bool                   // vmm.shutdown answers 204 and does nothing

	mu     sync.Mutex
	calls  []string
	config json.RawMessage // as received by vm.create
	state  string          // "" (no VM), Created, Running, Paused
	disks  map[string]bool
	nets   []fakeNIC
	bodies map[string][]byte // last body per operation
}

// fakeNIC is a NIC as vm.add-net received it: the body and, for each
// descriptor that came with the request, the identity of the file it
// refers to ("dev:ino"), which a test compares with the tap it passed.
type fakeNIC struct {
	Config netConfig
	Files  []string
}

type forcedReply struct {
	status int
	body   string
}

func newFakeVMM(s *openAPI) *fakeVMM {
	return &fakeVMM{schema: s, forced: map[string]forcedReply{}, disks: map[string]bool{}, bodies: map[string][]byte{}}
}

func (f *fakeVMM) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeVMM) NICs() []fakeNIC {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeNIC(nil), f.nets...)
}

func (f *fakeVMM) Body(op string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[op]
}

// chErr answers like Cloud Hypervisor: a JSON array of error messages.
func chErr(w http.ResponseWriter, status int, msgs ...string) {
	b, _ := json.Marshal(msgs)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func (f *fakeVMM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, ok := strings.CutPrefix(r.URL.Path, "/api/v1/")
	if !ok {
		chErr(w, http.StatusNotFound, "unknown path "+r.URL.Path)
		return
	}
	spec, ok := f.schema.Paths["/"+op]
	if !ok {
		chErr(w, http.StatusNotFound, "unknown operation "+op)
		return
	}
	body, _ := io.ReadAll(r.Body)
	files := takeFiles(r.Context())
	defer closeFiles(files)
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+op)
	f.bodies[op] = body
	forced, isForced := f.forced[op]
	f.mu.Unlock()

	if r.Method != spec.Method {
		chErr(w, http.StatusBadRequest, fmt.Sprintf("%s wants %s, got %s", op, spec.Method, r.Method))
		return
	}
	var req any
	switch {
	case spec.RequestBody != "":
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			chErr(w, http.StatusBadRequest, "Content-Type must be application/json, got "+ct)
			return
		}
		if err := f.schema.validateJSON(spec.RequestBody, body); err != nil {
			chErr(w, http.StatusBadRequest, "Error parsing JSON", err.Error())
			return
		}
		json.Unmarshal(body, &req)
	case len(bytes.TrimSpace(body)) > 0:
		chErr(w, http.StatusBadRequest, op+" takes no body")
		return
	}
	if isForced {
		w.WriteHeader(forced.status)
		io.WriteString(w, forced.body)
		return
	}
	if len(files) > 0 && op != "vm.add-net" {
		// Cloud Hypervisor drops them (vm.create) or never looks; either
		// way a driver sending them expects something that won't happen.
		chErr(w, http.StatusBadRequest, fmt.Sprintf("fake: %d descriptors sent with %s are dropped by Cloud Hypervisor", len(files), op))
		return
	}
	status, resp, errMsg := f.dispatch(op, body, files)
	switch {
	case errMsg != "":
		chErr(w, status, errMsg)
		return
	case resp == nil:
		w.WriteHeader(status)
	default:
		b, err := json.Marshal(resp)
		if err == nil {
			if ref := spec.Responses[strconv.Itoa(status)]; ref == nil {
				err = fmt.Errorf("schema has no body for %s %d", op, status)
			} else {
				err = f.schema.validateJSON(strings.TrimPrefix(*ref, "#/components/schemas/"), b)
			}
		}
		if err != nil {
			chErr(w, http.StatusInternalServerError, "fake answer breaks the schema: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(b)
	}
	if op == "vmm.shutdown" && f.onVMMShutdown != nil && !f.ignoreShutdown {
		f.onVMMShutdown()
	}
}

// dispatch applies one valid request; it returns status and either a
// response value or an error message.
func (f *fakeVMM) dispatch(op string, body []byte, files []*os.File) (int, any, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch op {
	case "vmm.ping":
		return 200, pingResponse{BuildVersion: "fake", Version: "v53.0-fake", PID: int64(os.Getpid()), Features: []string{"kvm", "igvm", "sev_snp"}}, ""
	case "vmm.shutdown":
		return 204, nil, ""
	case "vm.create":
		if f.config != nil {
			return 400, nil, "VM is already created"
		}
		if msg := checkLikeCLH(body); msg != "" {
			return 400, nil, msg
		}
		f.config = append(json.RawMessage(nil), body...)
		f.state = "Created"
		return 204, nil, ""
	case "vm.info":
		if f.config == nil {
			return 404, nil, "VM is not created"
		}
		return 200, map[string]any{"config": f.config, "state": f.state}, ""
	case "vm.boot":
		if f.config == nil {
			return 404, nil, "VM is not created"
		}
		if f.state != "Created" {
			return 400, nil, "VM is already booted"
		}
		f.state = "Running"
		if f.onBoot != nil {
			var cfg vmConfig
			json.Unmarshal(f.config, &cfg)
			go f.onBoot(cfg)
		}
		return 204, nil, ""
	case "vm.shutdown":
		if f.config == nil {
			return 404, nil, "VM is not created"
		}
		if f.state != "Running" && f.state != "Paused" {
			return 405, nil, "VM is not running"
		}
		f.state = "Created"
		return 204, nil, ""
	case "vm.pause", "vm.resume":
		from, to := "Running", "Paused"
		if op == "vm.resume" {
			from, to = to, from
		}
		if f.config == nil {
			return 404, nil, "VM is not created"
		}
		if f.state != from {
			return 405, nil, fmt.Sprintf("VM is %s, not %s", f.state, from)
		}
		f.state = to
		return 204, nil, ""
	case "vm.add-disk":
		var d diskConfig
		json.Unmarshal(body, &d)
		if f.config == nil {
			return 404, nil, "VM is not created"
		}
		if f.disks[d.ID] {
			return 409, nil, "identifier " + d.ID + " is not unique"
		}
		f.disks[d.ID] = true
		if f.state == "Created" {
			return 204, nil, "" // cold plug
		}
		return 200, pciDeviceInfo{ID: d.ID, BDF: fmt.Sprintf("0000:00:%02x.0", 5+len(f.disks))}, ""
	case "vm.add-net":
		return f.addNet(body, files)
	case "vm.remove-device":
		var d diskRemove
		json.Unmarshal(body, &d)
		if f.config == nil || !f.disks[d.ID] {
			return 404, nil, "no device " + d.ID
		}
		delete(f.disks, d.ID)
		return 204, nil, ""
	case "vm.delete":
		f.config, f.state = nil, ""
		return 204, nil, ""
	}
	return 400, nil, "fake does not implement " + op
}

// addNet mimics vm.add-net (f.mu held): the checks of NetConfig::validate
// on the fields the driver sends, with the descriptors that came with the
// request in place of any fd numbers in the body (which the schema check
// has already refused: the upstream OpenAPI has no fds field).
func (f *fakeVMM) addNet(body []byte, files []*os.File) (int, any, string) {
	var n struct {
		netConfig
		Tap       string `json:"tap"`
		MTU       *int   `json:"mtu"`
		NumQueues *int   `json:"num_queues"`
	}
	json.Unmarshal(body, &n)
	if f.config == nil {
		return 404, nil, "VM is not created"
	}
	var c vmConfig
	json.Unmarshal(f.config, &c)
	queues := 2 // upstream default
	if n.NumQueues != nil {
		queues = *n.NumQueues
	}
	switch {
	case n.Tap != "" && len(files) > 0:
		return 400, nil, "fake: tap " + n.Tap + " given with fds: Cloud Hypervisor would open the tap by name and ignore the fds"
	case n.Tap == "" && len(files) == 0:
		return 400, nil, "fake: neither tap nor fds: Cloud Hypervisor would create a tap of its own in the host's network namespace"
	case queues < 2:
		return 400, nil, fmt.Sprintf("Number of queues to virtio_net is less than 2: %d", queues)
	case len(files) > 0 && queues != 2*len(files):
		return 400, nil, fmt.Sprintf("Number of queues to virtio_net does not match the number of input FDs: %d != %d", queues, 2*len(files))
	case queues/2 > int(c.Cpus.BootVcpus):
		return 400, nil, fmt.Sprintf("Number of vCPUs is insufficient for the number of queues: %d > %d", queues/2, c.Cpus.BootVcpus)
	case n.MTU != nil && *n.MTU < 1280:
		return 400, nil, fmt.Sprintf("Invalid MTU %d", *n.MTU)
	case n.MTU != nil && len(files) > 0:
		// Not a validation error upstream: the VMM fails at boot when it
		// sets the MTU by the tap's name in its own network namespace.
		return 400, nil, "fake: mtu with fd-backed taps: Cloud Hypervisor would set it by name in the host's namespace"
	}
	if _, err := net.ParseMAC(n.MAC); n.MAC != "" && err != nil {
		return 400, nil, "Error parsing MAC address " + n.MAC
	}
	if f.disks[n.ID] || slices.ContainsFunc(f.nets, func(x fakeNIC) bool { return x.Config.ID == n.ID }) || slices.ContainsFunc(c.Disks, func(d diskConfig) bool { return d.ID == n.ID }) {
		return 409, nil, "identifier " + n.ID + " is not unique"
	}
	n.netConfig.NumQueues = queues // the outer field took the JSON value
	nic := fakeNIC{Config: n.netConfig}
	for _, file := range files {
		st, err := file.Stat()
		if err != nil {
			return 400, nil, "fake: received descriptor: " + err.Error()
		}
		sys := st.Sys().(*syscall.Stat_t)
		nic.Files = append(nic.Files, fmt.Sprintf("%d:%d", sys.Dev, sys.Ino))
	}
	f.nets = append(f.nets, nic)
	if f.onNet != nil {
		f.onNet(nic)
	}
	if f.state == "Created" {
		return 204, nil, "" // cold plug: the VMM opens the device at boot
	}
	return 200, pciDeviceInfo{ID: n.ID, BDF: fmt.Sprintf("0000:00:%02x.0", 5+len(f.disks)+len(f.nets))}, ""
}

// checkLikeCLH repeats the checks VmConfig::validate makes on the fields
// the driver sends (upstream vmm/src/config.rs), so that a config the real
// VMM would refuse fails here too.
func checkLikeCLH(body []byte) string {
	var c vmConfig
	if err := json.Unmarshal(body, &c); err != nil {
		return err.Error()
	}
	p := c.Payload
	switch {
	case p.Kernel == "" && p.Firmware == "" && p.IGVM == "":
		return "payload: no bootable item (kernel, firmware or igvm)"
	case c.Platform != nil && c.Platform.TDX && c.Platform.SevSnp:
		return "tdx and sev_snp are mutually exclusive"
	case c.Platform != nil && c.Platform.TDX && p.Firmware == "":
		return "No TDX firmware specified"
	case c.Platform != nil && c.Platform.TDX && c.Cpus.BootVcpus != c.Cpus.MaxVcpus:
		return "CPU hotplug is not permitted with TDX"
	case c.Platform != nil && c.Platform.SevSnp && p.IGVM == "":
		return "SEV-SNP requires an IGVM payload (--payload igvm=<path>)"
	case p.HostData != "" && (c.Platform == nil || !c.Platform.SevSnp):
		return "host_data is only used with sev_snp"
	case p.HostData != "" && len(p.HostData) != 64:
		return "Invalid host data (must be 64 hex characters)"
	case c.Serial != nil && c.Serial.Mode == "File" && c.Serial.File == "":
		return "serial: File mode needs a file"
	case c.Cpus.BootVcpus > c.Cpus.MaxVcpus:
		return "boot_vcpus > max_vcpus"
	}
	var nets struct {
		Net []struct {
			Tap string `json:"tap"`
		} `json:"net"`
	}
	json.Unmarshal(body, &nets)
	for i, n := range nets.Net {
		if n.Tap == "" {
			// vm.create takes no descriptors, so a NIC there without a tap
			// name gets a tap the VMM creates in its own namespace.
			return fmt.Sprintf("fake: net[%d] has no tap and vm.create takes no fds: Cloud Hypervisor would create its own tap in the host's namespace", i)
		}
	}
	return ""
}

// serveFake serves f on a unix socket until the test ends.
func serveFake(t *testing.T, f *fakeVMM, socket string) {
	t.Helper()
	srv, err := serveAPI(f, socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
}

// serveAPI serves h on a unix socket whose connections keep the
// descriptors they receive, for the handler to take (takeFiles).
func serveAPI(h http.Handler, socket string) (*http.Server, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, fdConnKey{}, c)
		},
	}
	go srv.Serve(fdListener{ln})
	return srv, nil
}

// fdListener accepts fdConns.
type fdListener struct{ *net.UnixListener }

func (l fdListener) Accept() (net.Conn, error) {
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return &fdConn{UnixConn: c}, nil
}

type fdConnKey struct{}

// fdConn is a server connection that keeps the descriptors (SCM_RIGHTS)
// arriving with its data, as micro_http does for Cloud Hypervisor: a
// request gets all those received since the previous request.
type fdConn struct {
	*net.UnixConn
	mu    sync.Mutex
	files []*os.File
}

func (c *fdConn) Read(b []byte) (int, error) {
	oob := make([]byte, syscall.CmsgSpace(4*maxNICs))
	n, oobn, _, _, err := c.ReadMsgUnix(b, oob)
	if n > 0 {
		// The race detector learns that a socket orders the writer before
		// the reader from read(2) and write(2) (package syscall's
		// annotations), not from recvmsg. An empty read, which returns at
		// once, tells it what the socket already guaranteed, so a test's
		// setup before a request does not count as racing with the handler.
		if rc, rerr := c.SyscallConn(); rerr == nil {
			rc.Control(func(fd uintptr) { syscall.Read(int(fd), nil) })
		}
	}
	if oobn > 0 {
		msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			fds, _ := syscall.ParseUnixRights(&m)
			c.mu.Lock()
			for _, fd := range fds {
				syscall.CloseOnExec(fd)
				c.files = append(c.files, os.NewFile(uintptr(fd), fmt.Sprintf("received-fd-%d", fd)))
			}
			c.mu.Unlock()
		}
	}
	return n, err
}

func (c *fdConn) Close() error {
	closeFiles(takeConnFiles(c))
	return c.UnixConn.Close()
}

func takeConnFiles(c *fdConn) []*os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	files := c.files
	c.files = nil
	return files
}

// takeFiles returns the descriptors received with the request of ctx.
func takeFiles(ctx context.Context) []*os.File {
	c, ok := ctx.Value(fdConnKey{}).(*fdConn)
	if !ok {
		return nil
	}
	return takeConnFiles(c)
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// serveHybridVsock answers hybrid vsock CONNECTs on socket the way Cloud
// Hypervisor's muxer does: "OK <host port>\n" when the guest port has a
// listener, a closed connection otherwise. Port 1024 echoes.
func serveHybridVsock(socket string, listening bool) (net.Listener, error) {
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	go func() {
		for hostPort := uint32(1 << 30); ; hostPort++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn, hostPort uint32) {
				defer c.Close()
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil || !listening || strings.TrimSpace(line) != "CONNECT 1024" {
					return
				}
				fmt.Fprintf(c, "OK %d\n", hostPort)
				io.Copy(c, br)
			}(c, hostPort)
		}
	}()
	return ln, nil
}
