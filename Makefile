# containerd-shim-coco-v2 — see README.md. Fragments in mk/ hold the larger recipes.
SHELL := /bin/bash
BIN   ?= bin
PREFIX ?= /usr/local
SHARE ?= /opt/coco/share
GO    ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/coco-runtime/coco/shim/version.Version=$(VERSION)
# grpcnotrace drops grpc's x/net/trace debug pages, which nothing here serves;
# with them goes html/template, whose reflection keeps every exported method
# alive in the link: the shim binary 20.3 -> 15.4 MB, the agent 32.3 -> 27.0 MB
# (resident memory per pod, initrd unpack time).
GO_TAGS ?= grpcnotrace

.PHONY: all build shim snapshotter deps lint test unit install clean
all: build

# Host packages (apt): QEMU, vhost-device-vsock, erofs-utils, CNI plugins, ...
deps:
	@bash scripts/install-deps.sh

# The README's test command: unit tests, a short fuzzing budget (mk/fuzz.mk),
# then the integration tests through a real containerd, real QEMU and the
# real guest.
test: deps lint guest-assets unit fuzz-short integration

build: shim snapshotter

# Static (no cgo), like containerd's own shims: no dynamic loader at each of
# the two starts per pod (~0.7 ms each), and no glibc version to match on a node.
shim:
	CGO_ENABLED=0 $(GO) build -tags "$(GO_TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN)/containerd-shim-coco-v2 ./shim/cmd/containerd-shim-coco-v2

# The node's proxy snapshotter for guest-pull classes (one per node, next to
# containerd; see shim/cmd/coco-snapshotter).
snapshotter:
	CGO_ENABLED=0 $(GO) build -tags "$(GO_TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN)/coco-snapshotter ./shim/cmd/coco-snapshotter

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...

unit:
	$(GO) test -count=1 ./...

# Installs the shim on PATH (containerd finds it by name) and the runtime
# class files next to the guest assets.
install: shim snapshotter
	install -D -m 0755 $(BIN)/containerd-shim-coco-v2 $(DESTDIR)$(PREFIX)/bin/containerd-shim-coco-v2
	install -D -m 0755 $(BIN)/coco-snapshotter $(DESTDIR)$(PREFIX)/bin/coco-snapshotter
	install -d $(DESTDIR)$(SHARE)/configs $(DESTDIR)$(SHARE)/policies
	install -m 0644 configs/*.toml $(DESTDIR)$(SHARE)/configs/
	install -m 0644 configs/policies/*.rego $(DESTDIR)$(SHARE)/policies/
	@if [ -f build/guest/initrd.img ]; then $(MAKE) --no-print-directory install-guest-assets; \
	else echo "guest assets not built: run 'make guest-assets' then 'make install' to install them"; fi
	@$(MAKE) --no-print-directory install-firmware

clean:
	rm -rf $(BIN) build

include $(wildcard mk/*.mk)
