# Shim fragment: the revision in `--version`, and the fuzz targets of the
# containerd-facing parsers (annotations, runtime options).
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS += -X github.com/coco-runtime/coco/shim/version.Revision=$(REVISION)

FUZZTIME ?= 60s

.PHONY: fuzz-shim
fuzz-shim:
	$(GO) test -run '^$$' -fuzz '^FuzzSpecAnnotations$$' -fuzztime $(FUZZTIME) ./shim/options
	$(GO) test -run '^$$' -fuzz '^FuzzRuntimeOptions$$' -fuzztime $(FUZZTIME) ./shim/options
	$(GO) test -run '^$$' -fuzz '^FuzzPodConfig$$' -fuzztime $(FUZZTIME) ./shim/options
