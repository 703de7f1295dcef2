//go:build tools

// Package runc only pins github.com/opencontainers/runc for `make runc`,
// which builds it with `go build github.com/opencontainers/runc` here.
package runc
