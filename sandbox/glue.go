package sandbox

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/virtcontainers/agent"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// annotationPolicy is the pod annotation with the host's proposed policy,
// read only when the runtime class's annotations_allowed admits it.
const annotationPolicy = "io.katacontainers.config.agent.policy"

func dialAgent(ctx context.Context, vm hypervisor.VM) (agentClient, error) {
	if gl, ok := vm.(hypervisor.GuestListener); ok {
		start := time.Now()
		conn, err := waitGuestReady(ctx, vm, gl)
		if err != nil && ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("guest agent not ready after %s: it did not announce itself on host vsock port %d (the boot timeout is [hypervisor] boot_timeout): %w%s",
				time.Since(start).Round(time.Millisecond), api.ReadyPort, err, consoleTail(vm.Info().ConsoleLog, 20))
		}
		if err == nil {
			// The agent serves on the connection it opened: no dial.
			c, err := agent.NewClient(ctx, conn, vm)
			if err == nil {
				return c, nil
			}
			log.G(ctx).WithError(err).Debug("the guest's announcement connection does not serve the agent API; dialling")
		} else if !errdefs.IsNotImplemented(err) {
			log.G(ctx).WithError(err).Debug("no readiness announcement from the guest; dialling anyway")
		}
	}
	return agent.Dial(ctx, vm)
}

// consoleTail is the last n lines of the guest console log, for errors
// about a guest that did not come up.
func consoleTail(path string, n int) string {
	t, err := hypervisor.Tail(path, n)
	if err != nil || t == "" {
		return ""
	}
	return fmt.Sprintf("\nlast %d lines of the guest console (%s):\n%s", n, path, t)
}

// helperTail is the end of the VM helper's log when it wrote one: a
// vsock daemon that failed (e.g. a panicked worker) leaves every
// connection of the VM hanging, and says so only there.
func helperTail(path string) string {
	if path == "" {
		return ""
	}
	t, err := hypervisor.Tail(path, 5)
	if err != nil || strings.TrimSpace(t) == "" {
		return ""
	}
	return fmt.Sprintf("\nthe vsock helper's log (%s) ends:\n%s", path, t)
}

// waitGuestReady returns the connection the guest agent opened to the
// host's ReadyPort once it serves, or ctx's error. Waiting for it keeps
// connection attempts away from a guest whose vsock driver is not up yet,
// which the vhost-user vsock daemon does not survive reliably.
func waitGuestReady(ctx context.Context, vm hypervisor.VM, gl hypervisor.GuestListener) (net.Conn, error) {
	l, err := gl.ListenGuest(api.ReadyPort)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	// A VM that dies will never announce itself: stop waiting at once.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		vm.Wait(ctx)
		cancel()
	}()
	type result struct {
		conn net.Conn
		err  error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		accepted <- result{c, err}
	}()
	select {
	case r := <-accepted:
		return r.conn, r.err
	case <-ctx.Done():
		l.Close()
		if r := <-accepted; r.conn != nil {
			r.conn.Close()
		}
		return nil, ctx.Err()
	}
}

func mkfsPath(c *configs.Config) string { return c.Rootfs.Mkfs }

// podPolicy returns the agent policy the host proposes: the pod's annotation
// (base64 Rego) when allowed, else the runtime class's [agent] policy file,
// else "" for the guest's built-in default. A policy in init-data always
// wins inside the guest: the host cannot override what the verifier saw.
func podPolicy(opts Options) (string, error) {
	v, ok := opts.Annotations[annotationPolicy]
	if !ok {
		if path := opts.Config.Agent.Policy; path != "" {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("[agent] policy in %s: %w", opts.Config.Path, err)
			}
			return string(b), nil
		}
		return "", nil
	}
	if !opts.Config.AnnotationAllowed(annotationPolicy) {
		return "", fmt.Errorf("annotation %s is not allowed by runtime class config %s: add it to [runtime] annotations_allowed: %w",
			annotationPolicy, opts.Config.Path, errdefs.ErrPermissionDenied)
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return "", fmt.Errorf("annotation %s: not base64 (encode the Rego text with base64 -w0): %w", annotationPolicy, errdefs.ErrInvalidArgument)
	}
	return string(b), nil
}
