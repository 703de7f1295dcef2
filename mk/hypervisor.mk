# Hypervisor layer (hypervisor/qemu, hypervisor/tee, hypervisor/vsock, vm-command).
#   make test-hypervisor          unit tests + QEMU introspection + real boots under TCG
#   make test-hypervisor-golden   rewrite hypervisor/qemu/testdata/*.golden (review the diff!)
#   make qemu-deps                QEMU >= 9.1 (sev-snp-guest) from bookworm-backports and
#                                 vhost-device-vsock, via scripts/install-deps.sh
HYPERVISOR_PKGS    := ./hypervisor/qemu/... ./hypervisor/tee/... ./hypervisor/vsock/... ./shim/cli/vmcommand/...
HYPERVISOR_TIMEOUT ?= 15m

.PHONY: test-hypervisor test-hypervisor-golden qemu-deps

qemu-deps:
	scripts/install-deps.sh

# The boot tests need build/guest/vmlinux and its modules.manifest (and, for
# Debian's kernel, its modules: `make kernel`);
# COCO_GUEST_DIR points them elsewhere. They skip, saying why, without them.
test-hypervisor:
	@[ -f $(or $(COCO_GUEST_DIR),build/guest)/vmlinux ] || $(MAKE) --no-print-directory kernel
	$(GO) test -count=1 $(HYPERVISOR_PKGS)
	$(GO) test -tags integration -count=1 -timeout $(HYPERVISOR_TIMEOUT) -v \
		-run 'TestBootVsock|TestAbandonedDialsKeepVsockAlive|TestQEMUKilled|TestQEMUFailsToStart|TestGuestPowersOff|TestGuestPanics|TestDialSilentGuest|TestBadKernelPath|TestDiskHotplug|TestAccelAuto|TestStartPausedSEVFlow|TestStaleStateDir' \
		./hypervisor/qemu/

test-hypervisor-golden:
	$(GO) test -count=1 -run 'TestGolden' ./hypervisor/qemu/ -update
	git diff --stat -- hypervisor/qemu/testdata
