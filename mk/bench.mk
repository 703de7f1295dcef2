# Benchmarks. `make bench` starts one real containerd (integration/harness)
# and prints pod-start phases, memory and latency of the coco shim next to
# containerd's runc shim and a bare QEMU boot; the JSON goes to $(BENCH_OUT).
#   make bench BENCH_ARGS="-n 3 -concurrency 1,4"
#   make bench-go        Go benchmarks of the hot paths (go test -bench)
BENCH_OUT  ?= build/bench
BENCH_ARGS ?=
# Our kernel's assets (the coco pods) and Debian's generic kernel's, made
# from the same agent and initrd contents: every coco pod and bare boot runs
# with both, side by side (integration/bench/README.md).
BENCH_GUEST_OUT   ?= build/guest-own
BENCH_GENERIC_OUT ?= build/guest-debian
BENCH_GO_PKGS := ./guest-assets/agent/service/ ./guest-assets/agent/policyproc/ ./virtcontainers/policy/engine/ ./virtcontainers/initdata/ ./hypervisor/qemu/ ./sandbox/

.PHONY: bench bench-go

# Both asset sets are (re)made first, the kernels from the cache when it has
# them, so the two kernels run the same agent.
bench:
	@$(MAKE) --no-print-directory guest-assets GUEST_KERNEL=own GUEST_OUT=$(BENCH_GUEST_OUT) >/dev/null
	@$(MAKE) --no-print-directory guest-assets GUEST_KERNEL=debian GUEST_OUT=$(BENCH_GENERIC_OUT) >/dev/null
	$(GO) run -tags integration ./integration/cmd/bench -out $(BENCH_OUT) -guest $(BENCH_GUEST_OUT) -generic-guest $(BENCH_GENERIC_OUT) $(BENCH_ARGS)

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 $(BENCH_GO_PKGS)
