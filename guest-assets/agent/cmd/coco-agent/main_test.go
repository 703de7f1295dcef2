//go:build linux

package main

import "testing"

// A plain VM's list of boot disks decides whether SetupSandbox waits for
// the disk driver to look for init-data.
func TestInitDataDiskPossible(t *testing.T) {
	if initDataDiskPossible([]string{"coco-tools"}, true) {
		t.Error("the host listed only the tools disk: no init-data disk to wait for")
	}
	if !initDataDiskPossible([]string{"coco-tools", "initdata"}, true) {
		t.Error("the host listed an init-data disk")
	}
	if initDataDiskPossible([]string{""}, true) { // "coco.disks="
		t.Error("the host listed no disks")
	}
}
