# Guest assets: kernel (pinned Debian package), static crun, coco-agent, initrd.
# Outputs in $(GUEST_OUT); downloads and slow builds cached under $(COCO_CACHE),
# so a second `make guest-assets` only re-checks hashes and rebuilds the initrd.
GUEST_OUT     ?= build/guest
COCO_CACHE    ?= /var/cache/coco
KERNEL_PIN    := guest-assets/kernel/kernel.pin
# Which kernel `make kernel` puts in $(GUEST_OUT):
#   own     built from Debian's linux-source-6.12 with guest-assets/kernel/config,
#           everything built in, no modules; cached per pin, config and toolchain
#           (the default: configfs-tsm, the SNP and TDX guest drivers, a faster boot)
#   debian  the pinned linux-image package (6.1), modules in the initrd: for
#           comparison (make bench) and for users who want a distribution kernel
GUEST_KERNEL  ?= own
KERNEL_SRC_PIN := guest-assets/kernel/kernel-source.pin
# Modules the guest loads (their dependencies are added, built-ins dropped).
# sev-guest (/dev/sev-guest, SNP reports) is loaded only by a TEE guest.
# bridge: a privileged container may make one (critest's Privileged spec
# runs `brctl addbr`), as it can on a runc node.
GUEST_MODULES ?= vsock,vmw_vsock_virtio_transport,virtio_pci,virtio_blk,virtio_net,erofs,overlay,virtio_balloon,sev-guest,dm-crypt,xts,bridge
# 1 keeps the modules' signatures, for guest kernels that enforce them
# (Secure Boot lockdown); stripped by default: see moddep.Install.
KEEP_MODULE_SIGNATURES ?=
# none or gzip; see guest-assets/initrd for why none is the default.
INITRD_COMPRESSION ?= none
AGENT_PKG     := ./guest-assets/agent/cmd/coco-agent
CRUN_PIN      := guest-assets/crun/crun.pin

.PHONY: kernel kernel-debian kernel-own kernel-config kernel-verify crun coco-agent coco-policy coco-pause initrd guest-assets install-guest-assets test-guest-boot

kernel:
	@case "$(GUEST_KERNEL)" in debian|own) ;; *) echo "kernel: GUEST_KERNEL=$(GUEST_KERNEL): want debian or own" >&2; exit 1;; esac
	@$(MAKE) --no-print-directory kernel-$(GUEST_KERNEL)

kernel-debian:
	@command -v dpkg-deb >/dev/null && command -v xz >/dev/null || { echo "kernel: needs dpkg-deb and xz: run scripts/install-deps.sh" >&2; exit 1; }
	@root=$$(guest-assets/kernel/fetch-kernel.sh $(KERNEL_PIN) $(COCO_CACHE)/kernel) && \
		$(GO) run ./guest-assets/cmd/prepkernel -root "$$root" -out $(GUEST_OUT) -modules $(GUEST_MODULES) \
			$(if $(KEEP_MODULE_SIGNATURES),-keep-signatures)
	@rm -f $(GUEST_OUT)/kernel.config

# Our kernel: the first build is long (nice 19, -j2: see README), later ones
# copy from the cache. The manifest is left empty, so the initrd carries no
# modules and the agent loads none.
kernel-own:
	@guest-assets/kernel/build-kernel.sh build $(KERNEL_SRC_PIN) $(COCO_CACHE)/kernel-own $(GUEST_OUT)
	@rm -rf $(GUEST_OUT)/modules
	@printf '# %s has everything built in: no modules to load\n' "$$(cat $(GUEST_OUT)/kernel.release)" >$(GUEST_OUT)/modules.manifest

# Regenerates guest-assets/kernel/guest-6.12.config from the fragments in
# guest-assets/kernel/config/ (commit both; `make kernel-own` refuses a stale one).
kernel-config:
	@guest-assets/kernel/build-kernel.sh config $(KERNEL_SRC_PIN) $(COCO_CACHE)/kernel-own guest-assets/kernel/guest-6.12.config

# Builds our kernel a second time from scratch and compares the bytes with
# the cached build (slow: a whole build).
kernel-verify:
	@guest-assets/kernel/build-kernel.sh verify $(KERNEL_SRC_PIN) $(COCO_CACHE)/kernel-own -

# crun, the guest's OCI runtime (containerd's runc task service runs it by
# name): the pinned upstream release from Debian's source package, built
# static and cached per pin and build script (guest-assets/crun).
crun:
	@guest-assets/crun/build-crun.sh $(CRUN_PIN) $(COCO_CACHE)/crun $(GUEST_OUT)/crun

coco-agent:
	@[ -d $(AGENT_PKG) ] && ls $(AGENT_PKG)/*.go >/dev/null 2>&1 || { echo "coco-agent: $(AGENT_PKG) does not exist yet (the agent is written in guest-assets/agent/); cannot build the initrd without it" >&2; exit 1; }
	@mkdir -p $(GUEST_OUT)
	CGO_ENABLED=0 $(GO) build -tags "$(GO_TAGS)" -trimpath -buildvcs=false -ldflags "-s -w -buildid=" -o $(GUEST_OUT)/coco-agent $(AGENT_PKG)

# coco-policy is the agent's Rego engine (OPA) in a process of its own,
# started only when a policy needs compiling (guest-assets/agent/policyproc).
coco-policy:
	CGO_ENABLED=0 $(GO) build -tags "$(GO_TAGS)" -trimpath -buildvcs=false -ldflags "-s -w -buildid=" -o $(GUEST_OUT)/coco-policy ./guest-assets/agent/cmd/coco-policy

# coco-pause is C against musl (see guest-assets/pause/pause.c for why);
# compiler and flags as in guest-assets/agent/pause.Compiler and CFlags.
PAUSE_CC ?= musl-gcc
coco-pause:
	@mkdir -p $(GUEST_OUT)
	$(PAUSE_CC) -static -Os -s -Wall -Wextra -Werror -Wl,--build-id=none -o $(GUEST_OUT)/coco-pause guest-assets/pause/pause.c

# initrd.img carries everything and is marked TEE (TEE classes: all of it is
# measured, and its agent fails closed: guest-assets/agent/trust);
# initrd-dev.img + tools.erofs are the same files with crun and coco-policy
# on a disk instead (coco-dev: the kernel unpacks 12 MB, not 34 MB).
initrd:
	$(GO) run ./guest-assets/cmd/mkinitrd -assets $(GUEST_OUT) -init $(GUEST_OUT)/coco-agent \
		-compression $(INITRD_COMPRESSION) -tee -o $(GUEST_OUT)/initrd.img
	$(GO) run ./guest-assets/cmd/mkinitrd -assets $(GUEST_OUT) -init $(GUEST_OUT)/coco-agent \
		-compression $(INITRD_COMPRESSION) -tools-out $(GUEST_OUT)/tools.erofs -o $(GUEST_OUT)/initrd-dev.img

guest-assets: kernel crun coco-agent coco-policy coco-pause
	@$(MAKE) --no-print-directory initrd
	@cd $(GUEST_OUT) && for f in vmlinux vmlinuz initrd.img initrd-dev.img tools.erofs; do \
		printf '%s  %s/%s (%s bytes)\n' "$$(sha256sum $$f | cut -d' ' -f1)" "$(GUEST_OUT)" "$$f" "$$(stat -c %s $$f)"; done

install-guest-assets:
	@for f in vmlinux vmlinuz initrd.img initrd-dev.img tools.erofs kernel.release; do \
		[ -f $(GUEST_OUT)/$$f ] || { echo "install-guest-assets: $(GUEST_OUT)/$$f missing: run 'make guest-assets' first" >&2; exit 1; }; done
	install -d $(DESTDIR)$(SHARE)
	install -m 0644 $(GUEST_OUT)/vmlinux $(GUEST_OUT)/vmlinuz $(GUEST_OUT)/initrd.img $(GUEST_OUT)/initrd-dev.img \
		$(GUEST_OUT)/tools.erofs $(GUEST_OUT)/kernel.release $(DESTDIR)$(SHARE)/
	@# Our kernel's build config: `check` reads it to tell what a TEE class's guest kernel has.
	@if [ -f $(GUEST_OUT)/kernel.config ]; then install -m 0644 $(GUEST_OUT)/kernel.config $(DESTDIR)$(SHARE)/; \
		else rm -f $(DESTDIR)$(SHARE)/kernel.config; fi

# Boots the kernel with a test init under QEMU TCG (needs `make kernel`);
# TestOwnKernel checks our kernel's config and TEE drivers from inside the
# guest (it skips Debian's).
test-guest-boot:
	$(GO) test -tags integration -count=1 -v -run 'TestBoot|TestOwnKernel' ./guest-assets/internal/boottest/
