//go:build tools

// Package tools pins the real peers the integration tests build from their Go
// modules at the versions in go.mod: containerd, ctr and containerd's own runc
// shim (the same-run baseline), and runc for the guest.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc"
	_ "github.com/opencontainers/runc"
	_ "google.golang.org/protobuf/cmd/protoc-gen-go"
)
