package api

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParsePortForwardHeader(t *testing.T) {
	good := map[string]uint16{"FORWARD 1\n": 1, "FORWARD 80": 80, "FORWARD 65535\n": 65535}
	for line, port := range good {
		h, err := ParsePortForwardHeader(line)
		if err != nil || h.Port != port {
			t.Errorf("%q: got %v, %v; want port %d", line, h, err, port)
		}
		if got := (PortForwardHeader{Port: port}).String(); strings.TrimSuffix(line, "\n") != strings.TrimSuffix(got, "\n") {
			t.Errorf("String() = %q, want %q", got, line)
		}
	}
	bad := []string{
		"", "\n", "FORWARD", "FORWARD \n", "FORWARD 0\n", "FORWARD 65536\n", "FORWARD 99999\n",
		"FORWARD 080\n", "FORWARD +80\n", "FORWARD -1\n", "FORWARD 80 \n", "FORWARD  80\n",
		"forward 80\n", "FORWARD 0x50\n", "FORWARD 80\r\n", "FORWARD 127.0.0.1:80\n",
		"STREAM c - stdout\n", "FORWARD " + strings.Repeat("1", 20) + "\n",
	}
	for _, line := range bad {
		if h, err := ParsePortForwardHeader(line); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: got %v, %v; want InvalidArgument", line, h, err)
		}
	}
}

func TestPortForwardRequestValidate(t *testing.T) {
	for port, ok := range map[uint32]bool{0: false, 1: true, 65535: true, 65536: false, 1 << 31: false} {
		err := (&PortForwardRequest{Port: port}).Validate()
		if (err == nil) != ok {
			t.Errorf("port %d: %v", port, err)
		}
	}
}
