# Agent API generation. Generated code is committed; `make proto` reproduces it
# with the plugin versions pinned in go.mod and Debian's protoc.
PROTO_DIR := virtcontainers/agent/api

.PHONY: proto
proto:
	@command -v protoc >/dev/null || { echo "protoc missing: run scripts/install-deps.sh" >&2; exit 1; }
	mkdir -p $(BIN)
	go build -o $(BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	go build -o $(BIN)/protoc-gen-go-ttrpc github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc
	PATH=$(CURDIR)/$(BIN):$$PATH protoc -I $(PROTO_DIR) -I /usr/include \
		--go_out=paths=source_relative:$(PROTO_DIR) \
		--go-ttrpc_out=paths=source_relative:$(PROTO_DIR) \
		$(PROTO_DIR)/agent.proto $(PROTO_DIR)/workload.proto
