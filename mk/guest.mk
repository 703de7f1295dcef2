# Guest assets: kernel (pinned Debian package), static runc, coco-agent, initrd.
# Outputs in $(GUEST_OUT); downloads and slow builds cached under $(COCO_CACHE),
# so a second `make guest-assets` only re-checks hashes and rebuilds the initrd.
GUEST_OUT     ?= build/guest
COCO_CACHE    ?= /var/cache/coco
KERNEL_PIN    := guest-assets/kernel/kernel.pin
# Modules the guest loads (their dependencies are added, built-ins dropped).
GUEST_MODULES ?= vsock,vmw_vsock_virtio_transport,virtio_pci,virtio_blk,virtio_net,erofs,overlay,virtio_balloon
# 1 keeps the modules' signatures, for guest kernels that enforce them
# (Secure Boot lockdown); stripped by default: see moddep.Install.
KEEP_MODULE_SIGNATURES ?=
# none or gzip; see guest-assets/initrd for why none is the default.
INITRD_COMPRESSION ?= none
AGENT_PKG     := ./guest-assets/agent/cmd/coco-agent
RUNC_MOD_DIR  := guest-assets/runc

.PHONY: kernel runc coco-agent coco-policy coco-pause initrd guest-assets install-guest-assets test-guest-boot

kernel:
	@command -v dpkg-deb >/dev/null && command -v xz >/dev/null || { echo "kernel: needs dpkg-deb and xz: run scripts/install-deps.sh" >&2; exit 1; }
	@root=$$(guest-assets/kernel/fetch-kernel.sh $(KERNEL_PIN) $(COCO_CACHE)/kernel) && \
		$(GO) run ./guest-assets/cmd/prepkernel -root "$$root" -out $(GUEST_OUT) -modules $(GUEST_MODULES) \
			$(if $(KEEP_MODULE_SIGNATURES),-keep-signatures)

# runc builds in its own module (guest-assets/runc/go.mod) so it gets the
# dependency versions it was written for; the binary is cached per version,
# toolchain, tags and go.sum, since the static cgo build takes a while on 2
# cores. Tags: runc's own release set (seccomp, urfave_cli_no_docs: no
# markdown/man generator, whose package init every runc process paid), static
# name resolution, and runc_nocriu: the guest has no CRIU and the agent
# refuses checkpoints.
RUNC_TAGS := seccomp urfave_cli_no_docs runc_nocriu netgo osusergo
runc:
	@command -v pkg-config >/dev/null && pkg-config --exists libseccomp || { echo "runc: needs libseccomp-dev and pkg-config: run scripts/install-deps.sh" >&2; exit 1; }
	@set -e; main=$$($(GO) list -m -f '{{.Version}}' github.com/opencontainers/runc); \
	pin=$$(cd $(RUNC_MOD_DIR) && $(GO) list -m -f '{{.Version}}' github.com/opencontainers/runc); \
	[ "$$main" = "$$pin" ] || { echo "runc: go.mod has runc $$main but $(RUNC_MOD_DIR)/go.mod has $$pin: run 'cd $(RUNC_MOD_DIR) && go get github.com/opencontainers/runc@$$main'" >&2; exit 1; }; \
	key=$$(cat $(RUNC_MOD_DIR)/go.sum <($(GO) env GOVERSION) <(echo "$(RUNC_TAGS)") | sha256sum | cut -c1-12); \
	cached=$(COCO_CACHE)/runc/runc-$$pin-$$key; \
	if [ ! -x "$$cached" ]; then \
		echo "runc: building $$pin (static, seccomp)"; mkdir -p $(COCO_CACHE)/runc; \
		tmp=$$(mktemp $(COCO_CACHE)/runc/.build.XXXXXX); \
		(cd $(RUNC_MOD_DIR) && CGO_ENABLED=1 $(GO) build -trimpath -buildvcs=false \
			-tags "$(RUNC_TAGS)" \
			-ldflags "-extldflags -static -s -w -buildid= -X main.version=$${pin#v}" \
			-o "$$tmp" github.com/opencontainers/runc) || { rm -f "$$tmp"; exit 1; }; \
		chmod 0755 "$$tmp"; mv "$$tmp" "$$cached"; \
	fi; \
	mkdir -p $(GUEST_OUT); tmp=$$(mktemp $(GUEST_OUT)/.runc.XXXXXX); \
	cp "$$cached" "$$tmp" && chmod 0755 "$$tmp" && mv "$$tmp" $(GUEST_OUT)/runc; \
	echo "$$(sha256sum $(GUEST_OUT)/runc | cut -d' ' -f1)  $(GUEST_OUT)/runc ($$pin, $$(stat -c %s $(GUEST_OUT)/runc) bytes)"

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

# initrd.img carries everything (TEE classes: all of it is measured);
# initrd-dev.img + tools.erofs are the same files with runc and coco-policy
# on a disk instead (coco-dev: the kernel unpacks 12 MB, not 42 MB).
initrd:
	$(GO) run ./guest-assets/cmd/mkinitrd -assets $(GUEST_OUT) -init $(GUEST_OUT)/coco-agent \
		-compression $(INITRD_COMPRESSION) -o $(GUEST_OUT)/initrd.img
	$(GO) run ./guest-assets/cmd/mkinitrd -assets $(GUEST_OUT) -init $(GUEST_OUT)/coco-agent \
		-compression $(INITRD_COMPRESSION) -tools-out $(GUEST_OUT)/tools.erofs -o $(GUEST_OUT)/initrd-dev.img

guest-assets: kernel runc coco-agent coco-policy coco-pause
	@$(MAKE) --no-print-directory initrd
	@cd $(GUEST_OUT) && for f in vmlinux vmlinuz initrd.img initrd-dev.img tools.erofs; do \
		printf '%s  %s/%s (%s bytes)\n' "$$(sha256sum $$f | cut -d' ' -f1)" "$(GUEST_OUT)" "$$f" "$$(stat -c %s $$f)"; done

install-guest-assets:
	@for f in vmlinux vmlinuz initrd.img initrd-dev.img tools.erofs kernel.release; do \
		[ -f $(GUEST_OUT)/$$f ] || { echo "install-guest-assets: $(GUEST_OUT)/$$f missing: run 'make guest-assets' first" >&2; exit 1; }; done
	install -d $(DESTDIR)$(SHARE)
	install -m 0644 $(GUEST_OUT)/vmlinux $(GUEST_OUT)/vmlinuz $(GUEST_OUT)/initrd.img $(GUEST_OUT)/initrd-dev.img \
		$(GUEST_OUT)/tools.erofs $(GUEST_OUT)/kernel.release $(DESTDIR)$(SHARE)/

# Boots the kernel with a test init under QEMU TCG (needs `make kernel`).
test-guest-boot:
	$(GO) test -tags integration -count=1 -v -run TestBoot ./guest-assets/internal/boottest/
