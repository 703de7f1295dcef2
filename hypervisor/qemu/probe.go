package qemu

import "github.com/coco-runtime/coco/hypervisor/kvmprobe"

// defaultProber is the KVM probe accel "auto" uses, cached per boot: a tiny guest booted
// under KVM with a hard deadline, because these hosts can expose a
// /dev/kvm that hangs real guests.
func defaultProber() KVMProber { return kvmprobe.Cached(kvmprobe.DefaultCacheDir) }
