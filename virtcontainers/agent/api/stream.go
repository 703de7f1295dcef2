package api

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// Guest vsock ports. The agent serves ttrpc on AgentPort; each stdio stream
// of a guest process is one connection to StreamPort.
const (
	AgentPort  uint32 = 1024
	StreamPort uint32 = 1025
	// ReadyPort is the HOST port the agent connects to once it serves; it
	// serves the agent API on that connection too, so a host that listens
	// there needs no connection of its own and never dials into a guest
	// that cannot answer yet (vhost-device-vsock mishandles connections
	// opened before the guest driver is up). Hosts that do not listen
	// (kernel vhost-vsock) dial AgentPort instead.
	//
	// It is the highest valid port because vhost-device-vsock (0.3.0, as
	// packaged) gives host-initiated connections ports 0, 1, 2, ... and
	// refuses every later one for good once the next port is held; it counts
	// the agent's pod-long connection here as holding ReadyPort. At 1026 the
	// 1,027th host connection (the 513th ExecSync) and all after it failed
	// with EOF (issue 27); up here the counter would first have to go through
	// 4,294,967,294 connections.
	ReadyPort uint32 = 0xFFFFFFFE
)

// Stream kinds named in a stream handshake.
const (
	StreamStdin  = "stdin"
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// InitExec is the exec id a stream handshake uses for a container's init
// process.
const InitExec = "-"

// MaxStreamHeader bounds the handshake line, newline included.
const MaxStreamHeader = 512

// StreamHeader is the one line a host sends on a new StreamPort connection:
//
//	STREAM <container-id> <exec-id or "-"> <stdin|stdout|stderr>\n
//
// The guest answers "OK\n" or "ERR <reason>\n"; raw bytes follow an OK.
type StreamHeader struct {
	ContainerID string
	ExecID      string // "" for the init process
	Kind        string
}

// String formats the handshake line, newline included.
func (h StreamHeader) String() string {
	exec := h.ExecID
	if exec == "" {
		exec = InitExec
	}
	return fmt.Sprintf("STREAM %s %s %s\n", h.ContainerID, exec, h.Kind)
}

// Validate checks the ids and the kind.
func (h StreamHeader) Validate() error {
	if err := ValidateID("container_id", h.ContainerID); err != nil {
		return err
	}
	if h.ExecID != "" {
		if err := ValidateID("exec_id", h.ExecID); err != nil {
			return err
		}
	}
	switch h.Kind {
	case StreamStdin, StreamStdout, StreamStderr:
		return nil
	}
	return fmt.Errorf("stream kind %q: want stdin, stdout or stderr: %w", h.Kind, errdefs.ErrInvalidArgument)
}

// ParseStreamHeader parses a handshake line (with or without its newline).
// The init process's "-" becomes an empty ExecID.
func ParseStreamHeader(line string) (StreamHeader, error) {
	if len(line) > MaxStreamHeader {
		return StreamHeader{}, fmt.Errorf("stream header longer than %d bytes: %w", MaxStreamHeader, errdefs.ErrInvalidArgument)
	}
	line = strings.TrimSuffix(line, "\n")
	f := strings.Split(line, " ")
	if len(f) != 4 || f[0] != "STREAM" {
		return StreamHeader{}, fmt.Errorf("stream header %q: want \"STREAM <container-id> <exec-id|-> <stdin|stdout|stderr>\": %w", line, errdefs.ErrInvalidArgument)
	}
	h := StreamHeader{ContainerID: f[1], ExecID: f[2], Kind: f[3]}
	if h.ExecID == "" {
		return StreamHeader{}, fmt.Errorf("stream header %q: empty exec id (use \"-\" for the init process): %w", line, errdefs.ErrInvalidArgument)
	}
	if h.ExecID == InitExec {
		h.ExecID = ""
	}
	if err := h.Validate(); err != nil {
		return StreamHeader{}, err
	}
	return h, nil
}
