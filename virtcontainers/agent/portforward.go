package agent

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// portForwardHandshake bounds the handshake when ctx has no deadline: the
// guest answers once its own dial to the port succeeded or failed.
const portForwardHandshake = 10 * time.Second

// OpenPortForward opens a connection to TCP port on the guest's loopback
// (the pod's), through vsock port api.PortForwardPort. The guest's policy
// judges it (rule PortForwardRequest); a refusal or a failed dial in the
// guest comes back as an error with the guest's reason
// (errdefs.IsPermissionDenied for the policy, IsNotFound for nothing
// listening there). CloseWrite on the returned connection half-closes the
// guest's.
func (c *Client) OpenPortForward(ctx context.Context, port uint16) (net.Conn, error) {
	h := api.PortForwardHeader{Port: port}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	conn, err := c.d.Dial(ctx, api.PortForwardPort)
	if err != nil {
		return nil, fmt.Errorf("dial port-forward port %d: %w", api.PortForwardPort, err)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(portForwardHandshake)
	}
	conn.SetDeadline(dl)
	if err := portForwardHandshakeOn(conn, h); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

func portForwardHandshakeOn(conn net.Conn, h api.PortForwardHeader) error {
	if _, err := conn.Write([]byte(h.String())); err != nil {
		return fmt.Errorf("port-forward to guest port %d: %w", h.Port, err)
	}
	line, err := readLine(conn)
	if err != nil {
		return fmt.Errorf("port-forward to guest port %d: no answer: %w", h.Port, err)
	}
	if line == "OK" {
		return nil
	}
	reason, ok := strings.CutPrefix(line, "ERR ")
	if !ok {
		return fmt.Errorf("port-forward to guest port %d: unexpected answer %q", h.Port, line)
	}
	var cls error = errdefs.ErrUnknown
	for _, c := range []error{errdefs.ErrPermissionDenied, errdefs.ErrInvalidArgument, errdefs.ErrNotFound,
		errdefs.ErrResourceExhausted, errdefs.ErrFailedPrecondition, errdefs.ErrUnavailable} {
		if strings.Contains(reason, c.Error()) {
			cls = c
			break
		}
	}
	return fmt.Errorf("guest refused port-forward to port %d: %s: %w", h.Port, reason, cls)
}
