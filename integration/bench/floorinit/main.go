//go:build linux

// Command floorinit is the trivial PID 1 of the bench's bare-boot floor: it
// prints the guest's uptime (CLOCK_BOOTTIME, zero at kernel start) on the
// console and powers the VM off, so the QEMU process exits by itself. It
// does nothing else: the floor is "this kernel reaches user space".
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	fmt.Fprintf(os.Stdout, "COCO-FLOOR init_ns=%d\n", ts.Nano())
	os.Stdout.Sync()
	// PID 1 must never exit (the kernel would panic): power off instead.
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
