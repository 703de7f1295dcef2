//go:build integration

package bench

import (
	"strings"
	"testing"
)

func TestFloorArgsKeepThePodsMachineAndLogTheFirmware(t *testing.T) {
	pod := []string{"/usr/bin/qemu-system-x86_64", "-name", "guest=p", "-machine", "q35", "-accel", "tcg",
		"-cpu", "max", "-smp", "2", "-m", "512M",
		"-object", "memory-backend-file,id=mem0,size=512M,mem-path=/proc/self/fd/7,share=on",
		"-kernel", "/k/vmlinux", "-initrd", "/k/initrd-dev.img", "-append", "console=ttyS0 quiet",
		"-device", "virtio-balloon-pci,id=balloon0"}
	got, err := FloorArgs(pod, "/w/floor.img", "/w/console")
	if err != nil {
		t.Fatal(err)
	}
	j := strings.Join(got, " ")
	for _, want := range []string{"-machine q35", "-cpu max", "-smp 2", "-m 512M", "-kernel /k/vmlinux",
		"-append console=ttyS0 quiet", "mem-path=/proc/self/fd/3,", "-initrd /w/floor.img",
		"-chardev file,id=fwlog,path=/w/console.firmware", "-device isa-debugcon,iobase=0x402,chardev=fwlog"} {
		if !strings.Contains(j, want) {
			t.Errorf("floor argv lacks %q:\n%s", want, j)
		}
	}
	if strings.Contains(j, "virtio-balloon") || strings.Contains(j, "initrd-dev.img") {
		t.Errorf("the floor boots with no devices and its own initrd:\n%s", j)
	}

	arm := append([]string{"/usr/bin/qemu-system-aarch64"}, pod[1:]...)
	if got, err = FloorArgs(arm, "/w/floor.img", "/w/console"); err != nil {
		t.Fatal(err)
	}
	if j := strings.Join(got, " "); strings.Contains(j, "isa-debugcon") {
		t.Errorf("only x86 has the firmware debug port:\n%s", j)
	}
}
