package sandbox

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/coco-runtime/coco/configs"
	"github.com/coco-runtime/coco/hypervisor"
	"github.com/coco-runtime/coco/hypervisor/clh"
	"github.com/coco-runtime/coco/hypervisor/qemu"
	"github.com/coco-runtime/coco/hypervisor/tee"
	"github.com/coco-runtime/coco/virtcontainers/agent"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
	"github.com/coco-runtime/coco/virtcontainers/initdata"
)

// Pod annotations the sandbox reads, each only when the runtime class's
// annotations_allowed list admits it.
const (
	annotationInitData = "io.katacontainers.config.hypervisor.cc_init_data"
	annotationPolicy   = "io.katacontainers.config.agent.policy"
)

func newVM(cfg hypervisor.Config) (hypervisor.VM, error) {
	switch cfg.Driver {
	case "qemu":
		return qemu.New(cfg)
	case "clh":
		return clh.New(cfg)
	}
	return nil, fmt.Errorf("hypervisor driver %q: must be \"qemu\" or \"clh\": %w", cfg.Driver, errdefs.ErrInvalidArgument)
}

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

// initDataPlan is the pod's init-data as it will be bound and delivered.
type initDataPlan struct {
	launchData []byte // digest fitted to the TEE's launch-data field, or nil
	note       string // why the digest is not bound in hardware, if it is not
	image      []byte // block image the guest reads
}

// planInitData takes init-data from the pod annotation (when allowed) or the
// runtime class's default file, validates it and prepares its binding.
func planInitData(opts Options, kind tee.Kind) (*initDataPlan, error) {
	var (
		id  *initdata.InitData
		err error
	)
	if v, ok := opts.Annotations[annotationInitData]; ok {
		if !opts.Config.AnnotationAllowed(annotationInitData) {
			return nil, fmt.Errorf("annotation %s is not allowed by runtime class config %s: add it to [runtime] annotations_allowed: %w",
				annotationInitData, opts.Config.Path, errdefs.ErrPermissionDenied)
		}
		if id, err = initdata.Decode(v); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", annotationInitData, err)
		}
	} else if path := opts.Config.Runtime.InitData; path != "" {
		if id, err = initdata.ReadFile(path); err != nil {
			return nil, fmt.Errorf("[runtime] initdata in %s: %w", opts.Config.Path, err)
		}
	} else {
		return nil, nil
	}
	image, err := initdata.BlockImage(id.Raw())
	if err != nil {
		return nil, err
	}
	launch, note := initdata.Binding(kind, id)
	return &initDataPlan{launchData: launch, note: note, image: image}, nil
}

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
