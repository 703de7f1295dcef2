# coco-image: makes images for guest pull (issue 24), also reached as
# `containerd-shim-coco-v2 image ...` (the shim execs it, so the shim itself
# does not link the registry client: see shim/cli/image).
#   make image-encrypt SRC=oci:in DST=reg.example/app:enc KEY_ID=kbs:///default/key/app KEY_FILE=app.key
#   make image-sign REF=reg.example/app:enc KEY=cosign.key   (password in $COSIGN_PASSWORD)
.PHONY: image-tool install-image-tool image-encrypt image-sign

image-tool:
	CGO_ENABLED=0 $(GO) build -tags "$(GO_TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN)/coco-image ./shim/cmd/coco-image

install-image-tool: image-tool
	install -D -m 0755 $(BIN)/coco-image $(DESTDIR)$(PREFIX)/bin/coco-image

image-encrypt: image-tool
	$(BIN)/coco-image encrypt --key-id "$(KEY_ID)" --key-file "$(KEY_FILE)" "$(SRC)" "$(DST)"

image-sign: image-tool
	$(BIN)/coco-image sign --key "$(KEY)" "$(REF)"
