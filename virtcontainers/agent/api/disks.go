package api

// ToolsDiskSerial is the serial of the read-only EROFS disk that carries the
// guest's large, later-used binaries (runc, coco-policy) for runtime
// classes whose initrd leaves them out (hypervisor.tools_image; classes
// without a TEE only). The agent mounts it read-only; a TEE guest ignores it.
const ToolsDiskSerial = "coco-tools"

// InitDataDiskSerial is the serial of the init-data disk (the agent finds
// the image by its magic, not by this serial).
const InitDataDiskSerial = "initdata"

// ScratchDiskSerial is the serial of the writable scratch disk of a
// guest-pull class (rootfs.scratch_mib): the guest encrypts it under a key
// of its own and swaps to it, so pulled images can outgrow its memory.
const ScratchDiskSerial = "coco-scratch"
