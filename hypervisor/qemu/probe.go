package qemu

// defaultProber is the KVM probe accel "auto" uses.
// TODO: switch to kvmprobe.Probe once hypervisor/kvmprobe lands.
func defaultProber() KVMProber { return nil }
