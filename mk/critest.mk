# critest, the CRI validation suite of cri-tools (integration/critest_test.go),
# built from its module once per version into $(COCO_CACHE)/critest-* (~3 min
# on 2 cores) before `make integration`, outside the tests' timeout.
# COCO_CRITEST=0 skips the build and the test.
.PHONY: critest

critest:
	$(GO) run -tags integration ./integration/cmd/critest-build
