// Package plugin registers the shim's ttrpc services with containerd's shim
// library: the task API and the sandbox API, on one server, sharing one pod.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/log"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"github.com/containerd/ttrpc"

	"github.com/coco-runtime/coco/shim/events"
	"github.com/coco-runtime/coco/shim/manager"
	"github.com/coco-runtime/coco/shim/pod"
	"github.com/coco-runtime/coco/shim/sandboxsvc"
	"github.com/coco-runtime/coco/shim/task"
)

// Register adds the shim's services to containerd's plugin registry; call
// it once from main before shim.RunShim.
func Register(deps pod.Deps) {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "coco",
		Requires: []plugin.Type{plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			return initServices(ic, deps)
		},
	})
}

func initServices(ic *plugin.InitContext, deps pod.Deps) (any, error) {
	sdp, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
	if err != nil {
		return nil, err
	}
	sd, ok := sdp.(shutdown.Service)
	if !ok {
		return nil, fmt.Errorf("shutdown plugin is %T", sdp)
	}
	ns, err := namespaces.NamespaceRequired(ic.Context)
	if err != nil {
		return nil, err
	}
	pub, err := events.NewTTRPCPublisher(ic.Properties[plugins.PropertyTTRPCAddress])
	if err != nil {
		return nil, err
	}
	p := pod.New(ic.Context, ns, deps, pub)
	svcs := services{task.New(p, sd), sandboxsvc.New(p, sd)}

	// However the shim ends (last task gone, ShutdownSandbox, SIGTERM), the
	// VM goes with it, and its last events are published before the
	// connection to containerd closes.
	sd.RegisterCallback(func(ctx context.Context) error {
		if err := p.Stop(ctx); err != nil {
			log.G(ctx).WithError(err).Warn("stopping the pod at shim exit")
		}
		if addr := os.Getenv(manager.AddressEnv); addr != "" {
			if err := shim.RemoveSocket(addr); err != nil && !errors.Is(err, os.ErrNotExist) {
				log.G(ctx).WithError(err).Warn("removing the shim socket")
			}
		}
		return pub.Close()
	})
	go exitIfNoPod(ic.Context, p, sd, noPodTimeout)
	return svcs, nil
}

// noPodTimeout is how long a shim waits for containerd to create its pod.
// containerd sends Create (or CreateSandbox) right after `start` returns; a
// shim that has none this long after starting was given up on — its `start`
// was killed by the CRI call's deadline after forking it, or containerd died
// — and nobody will ever ask it for anything or stop it.
const noPodTimeout = time.Minute

// exitIfNoPod shuts the shim down (removing its socket) when no pod was
// created within limit.
func exitIfNoPod(ctx context.Context, p *pod.Pod, sd shutdown.Service, limit time.Duration) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-t.C:
	case <-sd.Done():
		return
	}
	if p.State() == pod.Empty {
		log.G(ctx).Warnf("no pod was created within %s of this shim's start: containerd gave up on it; exiting", limit)
		sd.Shutdown()
	}
}

// services registers several ttrpc services as one plugin instance.
type services []shim.TTRPCService

func (s services) RegisterTTRPC(server *ttrpc.Server) error {
	for _, svc := range s {
		if err := svc.RegisterTTRPC(server); err != nil {
			return err
		}
	}
	return nil
}
