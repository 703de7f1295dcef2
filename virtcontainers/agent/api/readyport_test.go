package api

import "testing"

// daemonPorts models how vhost-device-vsock 0.3.0 numbers host-initiated
// connections (issue 27): a counter from 0; if the counter's port is held
// (the host end of a live guest-initiated connection counts), the
// connection is refused and the counter does not move, so every later one
// is refused too.
type daemonPorts struct {
	next uint32
	held map[uint32]bool
}

func (d *daemonPorts) connect() bool {
	if d.held[d.next] {
		return false
	}
	d.next++ // host-initiated connections here are short-lived: not held
	return true
}

// The agent's pod-long connection to ReadyPort must not stop host
// connections: a pod that runs ExecSync 100,000 times opens ~200,000.
func TestReadyPortOutOfHostPortCounter(t *testing.T) {
	d := &daemonPorts{held: map[uint32]bool{ReadyPort: true}}
	for i := range 200_000 {
		if !d.connect() {
			t.Fatalf("host connection %d refused: the daemon's port counter reached ReadyPort %d", i+1, ReadyPort)
		}
	}
	if ReadyPort == 0xFFFFFFFF {
		t.Fatal("ReadyPort is VMADDR_PORT_ANY")
	}
}
