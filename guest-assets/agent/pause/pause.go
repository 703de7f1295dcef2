// Package pause names the sandbox container's process, coco-pause
// (guest-assets/pause/pause.c): where the initrd holds it and how it says
// it is ready.
package pause

// GuestPath is where the initrd holds coco-pause.
const GuestPath = "/usr/bin/coco-pause"

// ReadyFDEnv names the file descriptor on which coco-pause writes one byte
// once its signal handlers are in place (the agent waits for it; runc
// starts pause without it).
const ReadyFDEnv = "COCO_PAUSE_READY_FD"

// Source is coco-pause's C source, relative to the repository root.
const Source = "guest-assets/pause/pause.c"

// Compiler builds coco-pause against musl (Debian's musl-tools): the
// binary is 17 KB instead of glibc's 680 KB, and its start does next to
// nothing, which under TCG is ~0.25 ms of native work saved many times
// over on every pod's critical path.
const Compiler = "musl-gcc"

// CFlags build coco-pause static, small and byte-for-byte reproducible
// (its hash is part of the initrd's, hence of the launch measurement).
var CFlags = []string{"-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none"}
