package qemu

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/hypervisor"
)

func TestValidateNICs(t *testing.T) {
	mac := net.HardwareAddr{0x0a, 0, 0, 0, 0, 1}
	for _, tc := range []struct {
		name string
		nics []hypervisor.NIC
		want string // substring of the error; "" = valid
	}{
		{"ok", []hypervisor.NIC{{ID: "eth0", MAC: mac, MTU: 1500}, {ID: "eth1", MAC: mac}}, ""},
		{"bad id", []hypervisor.NIC{{ID: "eth,0", MAC: mac}}, `id "eth,0"`},
		{"twice", []hypervisor.NIC{{ID: "a", MAC: mac}, {ID: "a", MAC: mac}}, "used twice"},
		{"multicast mac", []hypervisor.NIC{{ID: "a", MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}}}, "mac"},
		{"short mac", []hypervisor.NIC{{ID: "a", MAC: net.HardwareAddr{2, 0}}}, "mac"},
		{"mtu", []hypervisor.NIC{{ID: "a", MAC: mac, MTU: 40}}, "mtu 40"},
		{"too many", make([]hypervisor.NIC, maxNICs+1), "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateNICs(tc.nics)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want InvalidArgument containing %q", err, tc.want)
			}
		})
	}
}

func TestAttachNICs(t *testing.T) {
	vm, err := newVM(baseConfig(), fakeHost(false), true)
	if err != nil {
		t.Fatal(err)
	}
	mac := net.HardwareAddr{0x0a, 0, 0, 0, 0, 1}
	if err := vm.AttachNICs([]hypervisor.NIC{{ID: "eth0", MAC: mac}}); err == nil || !strings.Contains(err.Error(), "no tap file") {
		t.Fatalf("nil tap: err = %v", err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := vm.AttachNICs([]hypervisor.NIC{{ID: "eth0", Tap: f, MAC: mac, MTU: 1400}}); err != nil {
		t.Fatal(err)
	}
	if err := vm.AttachNICs([]hypervisor.NIC{{ID: "eth0", Tap: f, MAC: mac}}); err == nil {
		t.Fatal("a second NIC with the same id was accepted")
	}
	args, _, err := vm.Command()
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{"-netdev tap,id=net-eth0,fd=3", "virtio-net-pci,id=nic-eth0,netdev=net-eth0,mac=0a:00:00:00:00:01,romfile=,host_mtu=1400"} {
		if !strings.Contains(line, want) {
			t.Errorf("argv lacks %q:\n%s", want, line)
		}
	}
	vm.started = true
	if err := vm.AttachNICs(nil); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("after Start: err = %v, want FailedPrecondition", err)
	}
}
