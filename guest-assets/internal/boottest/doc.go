// Package boottest holds the guest kernel boot test (build tag integration):
// it boots build/guest/vmlinux and vmlinuz under QEMU TCG with an initrd whose
// init is guest-assets/internal/testinit. Run it with `make test-guest-boot`.
package boottest
