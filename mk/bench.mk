# Benchmarks. `make bench` starts one real containerd (integration/harness)
# and prints pod-start phases, memory and latency of the coco shim next to
# containerd's runc shim and a bare QEMU boot; the JSON goes to $(BENCH_OUT).
#   make bench BENCH_ARGS="-n 3 -concurrency 1,4"
#   make bench-go        Go benchmarks of the hot paths (go test -bench)
BENCH_OUT  ?= build/bench
BENCH_ARGS ?=
BENCH_GO_PKGS := ./guest-assets/agent/service/ ./guest-assets/agent/policyproc/ ./virtcontainers/policy/engine/ ./virtcontainers/initdata/ ./hypervisor/qemu/ ./sandbox/

.PHONY: bench bench-go

bench:
	@[ -f build/guest/initrd.img ] && [ -f build/guest/tools.erofs ] || $(MAKE) --no-print-directory guest-assets
	$(GO) run -tags integration ./integration/cmd/bench -out $(BENCH_OUT) $(BENCH_ARGS)

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 $(BENCH_GO_PKGS)
