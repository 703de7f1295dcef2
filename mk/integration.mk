# End-to-end: a real containerd (built from the version in go.mod, cached under
# /var/cache/coco) driven through CRI and ctr. See integration/main_test.go.
#   make integration              every scenario for runc, coco and coco-sandboxer (COCO_E2E=0: runc only),
#                                 and the QEMU driver's real boots (both vsock back-ends)
#   make demo                     one pod in a VM through CRI, guest vs host side by side
#   make dev-containerd[-stop]    the same containerd in the background, for crictl
INTEGRATION_TIMEOUT ?= 45m
DEV_CONTAINERD_DIR  ?= /run/coco-dev-containerd

.PHONY: integration demo dev-containerd dev-containerd-stop

integration: kube-node critest
	$(GO) test -tags integration -count=1 -timeout $(INTEGRATION_TIMEOUT) ./integration/... ./guest-assets/internal/boottest/ ./hypervisor/...

demo:
	scripts/install-deps.sh
	$(MAKE) --no-print-directory guest-assets
	$(MAKE) --no-print-directory shim
	$(GO) run -tags integration ./integration/cmd/demo

dev-containerd: shim
	$(GO) run -tags integration ./integration/cmd/dev-containerd -dir $(DEV_CONTAINERD_DIR) start

dev-containerd-stop:
	$(GO) run -tags integration ./integration/cmd/dev-containerd -dir $(DEV_CONTAINERD_DIR) stop
