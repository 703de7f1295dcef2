# containerd-shim-coco-v2 — see README.md. Fragments in mk/ hold the larger recipes.
SHELL := /bin/bash
BIN   ?= bin
PREFIX ?= /usr/local
SHARE ?= /opt/coco/share
GO    ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/coco-runtime/coco/shim/version.Version=$(VERSION)

.PHONY: all build shim deps lint test unit install clean
all: build

# Host packages (apt): QEMU, vhost-device-vsock, erofs-utils, CNI plugins, ...
deps:
	@bash scripts/install-deps.sh

# The README's test command: unit tests, then the integration tests through a
# real containerd, real QEMU and the real guest.
test: deps lint unit integration

build: shim

shim:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/containerd-shim-coco-v2 ./shim/cmd/containerd-shim-coco-v2

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...

unit:
	$(GO) test -count=1 ./...

clean:
	rm -rf $(BIN)

include $(wildcard mk/*.mk)
