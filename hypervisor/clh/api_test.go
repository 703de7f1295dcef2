package clh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/tee"
)

// inProcessVM returns a VM from New whose API socket is served by an
// in-process fake; no VMM process exists. markRunning makes the VM look
// started so that the running-only operations can be exercised.
func inProcessVM(t *testing.T, kind tee.Kind) (*VM, *fakeVMM) {
	t.Helper()
	cfg, _ := testConfig(t, kind)
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	f := newFakeVMM(mustLoadOpenAPI(t))
	serveFake(t, f, v.api.socket)
	return v, f
}

func markRunning(v *VM) chan struct{} {
	done := make(chan struct{})
	v.mu.Lock()
	v.state, v.done = running, done
	v.mu.Unlock()
	return done
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestBootCallOrderAndBody(t *testing.T) {
	for _, kind := range []tee.Kind{tee.None, tee.SNP, tee.TDX} {
		t.Run(string(kind), func(t *testing.T) {
			v, f := inProcessVM(t, kind)
			ctx := ctxT(t)
			if err := v.boot(ctx); err != nil {
				t.Fatal(err)
			}
			want := []string{"GET vmm.ping", "PUT vm.create", "PUT vm.boot"}
			if got := f.Calls(); !reflect.DeepEqual(got, want) {
				t.Errorf("calls = %q, want %q", got, want)
			}
			// What the VMM received is exactly what Command() shows.
			lines, _, _ := v.Command()
			var sent, shown any
			json.Unmarshal(f.Body("vm.create"), &sent)
			json.Unmarshal([]byte(strings.Join(lines, "\n")), &shown)
			if !reflect.DeepEqual(sent, shown) {
				t.Errorf("vm.create body differs from Command():\nsent  %v\nshown %v", sent, shown)
			}
			info, err := v.api.info(ctx)
			if err != nil || info.State != "Running" {
				t.Errorf("vm.info = %+v, %v; want state Running", info, err)
			}
		})
	}
}

func TestBadResponses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		op    string
		reply forcedReply
		class func(error) bool
		want  []string
	}{
		{"create refused", "vm.create", forcedReply{400, `["Error creating the VM","SEV-SNP requires an IGVM payload"]`},
			errdefs.IsInvalidArgument, []string{"PUT vm.create: 400 Bad Request: Error creating the VM: SEV-SNP requires an IGVM payload"}},
		{"boot not found", "vm.boot", forcedReply{404, `["VM is not created"]`},
			errdefs.IsNotFound, []string{"PUT vm.boot: 404 Not Found: VM is not created"}},
		{"boot internal error, plain body", "vm.boot", forcedReply{500, "kvm exploded\n"},
			errdefs.IsUnknown, []string{"PUT vm.boot: 500 Internal Server Error: kvm exploded"}},
		{"ping without version", "vmm.ping", forcedReply{200, `{"build_version":"x"}`},
			errdefs.IsUnknown, []string{"vmm.ping", "no version"}},
		{"ping not JSON", "vmm.ping", forcedReply{200, `<html>`},
			nil, []string{"vmm.ping: decode response", "<html>"}},
		{"ping refused", "vmm.ping", forcedReply{503, ``},
			errdefs.IsUnknown, []string{"GET vmm.ping: 503 Service Unavailable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, f := inProcessVM(t, tee.SNP)
			f.forced[tc.op] = tc.reply
			err := v.boot(ctxT(t))
			if err == nil {
				t.Fatal("boot succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tc.class != nil && !tc.class(err) {
				t.Errorf("error %v has the wrong errdefs class", err)
			}
			// Nothing after a failed step.
			calls := f.Calls()
			if last := calls[len(calls)-1]; !strings.HasSuffix(last, tc.op) {
				t.Errorf("calls = %q: went on after %s failed", calls, tc.op)
			}
		})
	}
}

// TestFakeRejectsUnknownField shows that the fake's schema check reaches
// the driver as a clear error, so a driver field the schema lacks would
// fail every boot test.
func TestFakeRejectsUnknownField(t *testing.T) {
	v, f := inProcessVM(t, tee.None)
	err := v.api.put(ctxT(t), "vm.create", map[string]any{"payload": map[string]any{"kernel": "/k", "mrconfigid": "00"}}, nil)
	var apiErr *apiError
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(err.Error(), `unknown field "mrconfigid"`) {
		t.Fatalf("got %v, want 400 naming the unknown field", err)
	}
	err = v.api.put(ctxT(t), "vm.boot", map[string]any{"x": 1}, nil)
	if err == nil || !strings.Contains(err.Error(), "takes no body") {
		t.Errorf("body on vm.boot: got %v, want 400", err)
	}
	if got := f.Calls(); len(got) != 2 {
		t.Errorf("calls = %q", got)
	}
}

func TestHotplugAndPause(t *testing.T) {
	v, f := inProcessVM(t, tee.None)
	ctx := ctxT(t)
	if err := v.AddDisk(ctx, hypervisor.Disk{ID: "c1", Path: v.cfg.Disks[0].Path, ReadOnly: true}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("AddDisk before Start: %v, want ErrFailedPrecondition", err)
	}
	if err := v.boot(ctx); err != nil {
		t.Fatal(err)
	}
	markRunning(v)

	d := hypervisor.Disk{ID: "c1", Path: v.cfg.Disks[0].Path, ReadOnly: true}
	if err := v.AddDisk(ctx, d); err != nil {
		t.Fatal(err)
	}
	var sent map[string]any
	json.Unmarshal(f.Body("vm.add-disk"), &sent)
	want := map[string]any{"path": d.Path, "readonly": true, "id": "c1", "serial": "c1", "image_type": "Raw"}
	if !reflect.DeepEqual(sent, want) {
		t.Errorf("vm.add-disk body = %v, want %v", sent, want)
	}
	n := len(f.Calls())
	if err := v.AddDisk(ctx, d); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second AddDisk: %v, want ErrAlreadyExists", err)
	}
	if err := v.AddDisk(ctx, hypervisor.Disk{ID: "bad id that is far too long", Path: d.Path}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("AddDisk with a long id: %v, want ErrInvalidArgument", err)
	}
	if len(f.Calls()) != n {
		t.Errorf("refused AddDisk calls still reached the VMM: %q", f.Calls()[n:])
	}
	if err := v.RemoveDisk(ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("RemoveDisk unknown: %v, want ErrNotFound", err)
	}
	if err := v.RemoveDisk(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if got := string(f.Body("vm.remove-device")); got != `{"id":"c1"}` {
		t.Errorf("vm.remove-device body = %s", got)
	}
	// The VMM's own refusal comes back with its class: the fake still knows
	// c1 if we re-add, and a conflict there is ErrAlreadyExists.
	f.mu.Lock()
	f.disks["c2"] = true
	f.mu.Unlock()
	if err := v.AddDisk(ctx, hypervisor.Disk{ID: "c2", Path: d.Path}); !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "409") {
		t.Errorf("AddDisk conflicting in the VMM: %v, want 409 / ErrAlreadyExists", err)
	}
}

// TestStopSequence runs Stop against the in-process fake; the fake's
// vmm.shutdown stands in for the process exiting.
func TestStopSequence(t *testing.T) {
	v, f := inProcessVM(t, tee.None)
	ctx := ctxT(t)
	if err := v.boot(ctx); err != nil {
		t.Fatal(err)
	}
	done := markRunning(v)
	f.onVMMShutdown = func() { close(done) }
	if err := v.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"GET vmm.ping", "PUT vm.create", "PUT vm.boot", "PUT vm.shutdown", "PUT vmm.shutdown"}
	if got := f.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if _, err := os.Stat(v.cfg.StateDir); !os.IsNotExist(err) {
		t.Errorf("state dir after Stop: %v, want gone", err)
	}
	if _, err := v.Dial(ctx, 1024); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Dial after Stop: %v, want ErrFailedPrecondition", err)
	}
	if err := v.Start(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start after Stop: %v, want ErrFailedPrecondition", err)
	}
}

// TestBootAddsNICsBetweenCreateAndBoot: each NIC is cold-plugged with
// vm.add-net after vm.create and before vm.boot, its tap travelling with
// the request; vm.create itself names no NIC (it would take no fd).
func TestBootAddsNICsBetweenCreateAndBoot(t *testing.T) {
	v, f := inProcessVM(t, tee.SNP)
	nics := testNICs(t, 2)
	if err := v.AttachNICs(nics[:1]); err != nil {
		t.Fatal(err)
	}
	// A second call adds to the first.
	if err := v.AttachNICs(nics[1:]); err != nil {
		t.Fatal(err)
	}
	if err := v.boot(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	want := []string{"GET vmm.ping", "PUT vm.create", "PUT vm.add-net", "PUT vm.add-net", "PUT vm.boot"}
	if got := f.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	var created map[string]any
	json.Unmarshal(f.Body("vm.create"), &created)
	if created["net"] != nil {
		t.Errorf("vm.create has net %v: its fds would be dropped", created["net"])
	}
	got := f.NICs()
	if len(got) != 2 {
		t.Fatalf("fake got %d NICs, want 2", len(got))
	}
	for i, n := range got {
		wantCfg := netConfig{ID: fmt.Sprintf("nic-net%d", i), MAC: nics[i].MAC.String(), NumQueues: 2}
		if n.Config != wantCfg {
			t.Errorf("nic %d: add-net body %+v, want %+v", i, n.Config, wantCfg)
		}
		if id := fileID(t, nics[i].Tap); !reflect.DeepEqual(n.Files, []string{id}) {
			t.Errorf("nic %d: VMM received %q, want the tap %s alone", i, n.Files, id)
		}
	}
	if b := string(f.Body("vm.add-net")); strings.Contains(b, "mtu") || strings.Contains(b, "tap") || strings.Contains(b, "fds") {
		t.Errorf("add-net body %s names mtu, tap or fds", b)
	}
}

func TestAttachNICs(t *testing.T) {
	v, _ := inProcessVM(t, tee.None)
	good := testNICs(t, 1)
	for _, tc := range []struct {
		name string
		nics []hypervisor.NIC
		want []string
	}{
		{"no tap", []hypervisor.NIC{{ID: "net0", MAC: testMAC(0)}}, []string{`nic "net0"`, "no tap file", "NIC.Tap"}},
		{"bad mac", []hypervisor.NIC{{ID: "net0", Tap: good[0].Tap, MAC: net.HardwareAddr{1, 2, 3}}}, []string{`nic "net0"`, "6-byte unicast"}},
		{"mtu", []hypervisor.NIC{{ID: "net0", Tap: good[0].Tap, MAC: testMAC(0), MTU: 70000}}, []string{`nic "net0"`, "mtu 70000"}},
		{"twice across calls", append(good, good...), []string{"used twice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := v.AttachNICs(tc.nics)
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("AttachNICs: %v, want ErrInvalidArgument", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if v.cfg.NICs != nil || v.plan.nets != nil {
		t.Errorf("failed AttachNICs left NICs %v / %v", v.cfg.NICs, v.plan.nets)
	}
	markRunning(v)
	if err := v.AttachNICs(good); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("AttachNICs after Start: %v, want ErrFailedPrecondition", err)
	}
}

// TestClosedTapFailsBoot: a tap the caller closed too early is an error
// naming the NIC, before vm.boot.
func TestClosedTapFailsBoot(t *testing.T) {
	v, f := inProcessVM(t, tee.None)
	nics := testNICs(t, 1)
	if err := v.AttachNICs(nics); err != nil {
		t.Fatal(err)
	}
	nics[0].Tap.Close()
	err := v.boot(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), `nic "net0"`) || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("boot: %v, want an error naming the closed tap of net0", err)
	}
	if calls := f.Calls(); calls[len(calls)-1] != "PUT vm.create" {
		t.Errorf("calls = %q: went on past the failed NIC", calls)
	}
}
