# Fuzzing and the exit-order stress (issue 27).
#   make fuzz          every fuzz target of the module (scripts/fuzz.sh finds
#                      them), FUZZTIME each, with a table of executions
#   make fuzz-short    the same for FUZZ_SHORT each: make test's budget
#   make test-order    the exit-order stress tests under -race, 20 runs in a
#                      row, COCO_ORDER_ROUNDS rounds each
# A failing input is written to <package>/testdata/fuzz/<target>/ and runs
# in every later `go test` as a regression case: commit it with the fix.
FUZZ_SHORT ?= 2s
COCO_ORDER_ROUNDS ?= 150

.PHONY: fuzz fuzz-short test-order
fuzz:
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME)

fuzz-short:
	GO=$(GO) scripts/fuzz.sh $(FUZZ_SHORT)

test-order:
	COCO_ORDER_ROUNDS=$(COCO_ORDER_ROUNDS) $(GO) test -race -count=20 -run 'TestExitOrderUnderRaces|TestPauseTaskExitOrder' ./shim/task ./guest-assets/agent/pausetask
