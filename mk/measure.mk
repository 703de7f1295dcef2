# Init-data and launch-measurement checks. FUZZTIME bounds each fuzz run.
FUZZTIME ?= 60s

.PHONY: test-measure fuzz-measure
test-measure:
	$(GO) test -count=1 ./virtcontainers/initdata/... ./virtcontainers/measure/... ./shim/cli/measure/...

fuzz-measure:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./virtcontainers/initdata/
	$(GO) test -run '^$$' -fuzz '^FuzzReadBlockImage$$' -fuzztime $(FUZZTIME) ./virtcontainers/initdata/
	$(GO) test -run '^$$' -fuzz '^FuzzParseOVMF$$' -fuzztime $(FUZZTIME) ./virtcontainers/measure/
