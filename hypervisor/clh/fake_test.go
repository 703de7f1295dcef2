package clh

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
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
	onVMMShutdown  func()                 // after vmm.shutdown was answered
	forced         map[string]forcedReply // op → canned answer, bypassing checks on the answer
	ignoreShutdown bool                   // vmm.shutdown answers 204 and does nothing

	mu     sync.Mutex
	calls  []string
	config json.RawMessage // as received by vm.create
	state  string          // "" (no VM), Created, Running, Paused
	disks  map[string]bool
	bodies map[string][]byte // last body per operation
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
	status, resp, errMsg := f.dispatch(op, body)
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
func (f *fakeVMM) dispatch(op string, body []byte) (int, any, string) {
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
	return ""
}

// serveFake serves f on a unix socket until the test ends.
func serveFake(t *testing.T, f *fakeVMM, socket string) {
	t.Helper()
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
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
