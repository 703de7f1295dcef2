// Package service assembles the guest agent's ttrpc server: containerd's
// task API (the runc task service, wrapped) and coco.agent.v1.Agent on one
// server behind the policy gate, plus the stdio stream listener.
package service

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"

	"github.com/coco-runtime/coco/guest-assets/agent/cdh"
	"github.com/coco-runtime/coco/guest-assets/agent/container"
	"github.com/coco-runtime/coco/guest-assets/agent/events"
	"github.com/coco-runtime/coco/guest-assets/agent/pausetask"
	"github.com/coco-runtime/coco/guest-assets/agent/policy"
	"github.com/coco-runtime/coco/guest-assets/agent/portforward"
	"github.com/coco-runtime/coco/guest-assets/agent/stdio"
	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// DefaultNamespace is the containerd namespace of requests that carry none.
const DefaultNamespace = "default"

// Config configures an Agent.
type Config struct {
	Version string
	// StartNs is when the agent started (CLOCK_BOOTTIME).
	StartNs uint64
	// Now reads CLOCK_BOOTTIME in nanoseconds.
	Now func() uint64
	// Policy is the initial policy (nil = allow all).
	Policy policy.Policy
	// CompilePolicy turns policy text into a Policy; nil refuses policy text.
	CompilePolicy PolicyCompiler
	Guest         Guest
	Containers    container.Config
	// NativePause makes the agent run the sandbox container itself (with
	// Containers.PauseBinary, in CgroupRoot) instead of through the OCI
	// runtime.
	NativePause bool
	// Runtime is the OCI runtime binary the runc task service runs, by name
	// on PATH ("": runc).
	Runtime string
	// WaitRuntime returns once Runtime can be executed (the disk that
	// carries it may still be on its way); creates wait for it. nil = at once.
	WaitRuntime func(ctx context.Context) error
	// CgroupRoot is the guest's cgroup2 mount.
	CgroupRoot string
	// IODir holds the stdio FIFOs.
	IODir string
	// OnDestroy runs after DestroySandbox answered; it powers the VM off.
	OnDestroy func(reason string)
	// TEE says the measured boot made this a TEE guest
	// (guest-assets/agent/trust): a policy the host sends is refused unless
	// the policy in force allows it as a SetPolicy request.
	TEE bool
	// Owner loads and verifies the pod owner's init-data and returns its
	// policy.rego ("" when none). It runs once, from New, and every request
	// but Health waits for it, so the owner's policy judges SetupSandbox.
	// An error refuses every request but Health with it and powers the
	// guest off after the first refusal: the init-data is malformed, or (in
	// a TEE guest) not bound to the launch. nil: the guest has no init-data.
	Owner func(ctx context.Context) (policy string, err error)
}

// Agent is the guest agent's servers.
type Agent struct {
	srv     *ttrpc.Server
	queue   *events.Queue
	streams *stdio.Streams
	forward *portforward.Server
	gate    *policy.Gate
	sd      shutdown.Service
	clock   *bootClock
	now     func() uint64
}

// bootClock holds the guest clock readings Health reports (0: not yet).
type bootClock struct {
	ready     atomic.Uint64 // the ttrpc server began serving
	announced atomic.Uint64 // the connection to the host's ReadyPort was up
	// The first request on that connection had been read, and its answer
	// written: what lies between is guest work, what lies around is the
	// host's and the vsock path's.
	firstRequest atomic.Uint64
	firstReply   atomic.Uint64
}

// New builds the agent's services. ctx lives as long as the agent.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	a := &Agent{queue: events.New(0), clock: &bootClock{}, now: cfg.Now}
	ctx, a.sd = shutdown.WithShutdown(ctx)
	// The runc task service's cgroup v1 OOM watcher (started where the
	// hierarchy is not unified: not in the guest, but on hosts that run the
	// unit tests) stops only on context.Canceled; the shutdown context ends
	// with shutdown.ErrShutdown, on which the watcher loops closing its
	// epoll fd — and whatever later reuses that number. It gets a context
	// that is canceled when the shutdown one ends.
	taskCtx, cancelTask := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, cancelTask)
	inner, err := task.NewTaskService(taskCtx, a.queue, a.sd)
	if err != nil {
		return nil, fmt.Errorf("runc task service: %w", err)
	}
	ts := &taskService{TTRPCTaskService: inner, waitRuntime: cfg.WaitRuntime, runtime: cfg.Runtime}
	if cfg.Runtime != "" {
		if ts.runtimeOptions, err = typeurl.MarshalAnyToProto(&runcoptions.Options{BinaryName: cfg.Runtime}); err != nil {
			return nil, err
		}
	}
	if cfg.NativePause {
		ts.pause = pausetask.New(pausetask.Config{
			Binary:     cfg.Containers.PauseBinary,
			CgroupRoot: cfg.CgroupRoot,
			Publisher:  a.queue,
			Reaper:     reaper.Default,
		})
	}
	cfg.Containers.PodPIDHolder = pausetask.NewPIDHolder(ts.pause).Get
	containers := container.NewManager(cfg.Containers)
	ts.containers = containers
	gate := policy.NewGate(cfg.Policy, validator{containers}.check)
	a.gate = gate
	a.streams = stdio.New(ctx, cfg.IODir, ts.closeStdin, streamCheck(gate))
	ts.streams = a.streams
	a.forward = portforward.New(portforward.Config{Check: portForwardCheck(gate), Reserved: guestOwnPorts()})

	a.srv, err = ttrpc.NewServer(ttrpc.WithChainUnaryServerInterceptor(errorCodes, gate.UnaryInterceptor(), namespaceInterceptor))
	if err != nil {
		return nil, err
	}
	destroy := cfg.OnDestroy
	if destroy == nil {
		destroy = func(string) {}
	}
	var own *owner
	if cfg.Owner != nil {
		own = loadOwner(ctx, cfg.Owner, cfg.CompilePolicy, gate, destroy)
		gate.WaitOwner(own.wait)
	}
	taskAPI.RegisterTTRPCTaskService(a.srv, ts)
	api.RegisterAgentService(a.srv, &agentService{
		version:    cfg.Version,
		startNs:    cfg.StartNs,
		clock:      a.clock,
		now:        cfg.Now,
		gate:       gate,
		queue:      a.queue,
		guest:      cfg.Guest,
		compile:    cfg.CompilePolicy,
		owner:      own,
		tee:        cfg.TEE,
		destroy:    destroy,
		containers: containers,
	})
	return a, nil
}

// Pseudo-methods under which stream handshakes are put to the gate.
const (
	readStreamMethod  = "/coco.agent.v1.Agent/ReadStream"
	writeStreamMethod = "/coco.agent.v1.Agent/WriteStream"
)

// streamCheck puts a stream handshake to the gate: refused before
// SetupSandbox (and on invalid input), silenced when the policy denies it.
func streamCheck(g *policy.Gate) stdio.CheckFunc {
	return func(ctx context.Context, h api.StreamHeader) (bool, error) {
		var err error
		if h.Kind == api.StreamStdin {
			err = g.Check(ctx, writeStreamMethod, &api.WriteStreamRequest{ContainerId: h.ContainerID, ExecId: h.ExecID})
		} else {
			err = g.Check(ctx, readStreamMethod, &api.ReadStreamRequest{ContainerId: h.ContainerID, ExecId: h.ExecID, Kind: h.Kind})
		}
		if errdefs.IsPermissionDenied(err) {
			log.G(ctx).WithField("id", h.ContainerID).Infof("%s stream denied by agent policy: no data will pass", h.Kind)
			return false, nil
		}
		return err == nil, err
	}
}

// guestOwnPorts are the loopback ports of the agent's own services, which
// port-forward never reaches: the workload API hands out the pod's secrets.
func guestOwnPorts() map[uint16]string {
	out := map[uint16]string{}
	if _, p, err := net.SplitHostPort(cdh.Addr); err == nil {
		if n, err := strconv.ParseUint(p, 10, 16); err == nil {
			out[uint16(n)] = "the guest's workload API (" + cdh.Addr + ", the pod's secrets)"
		}
	}
	return out
}

const portForwardMethod = "/coco.agent.v1.Agent/PortForward"

// portForwardCheck puts a port-forward handshake to the gate: refused before
// SetupSandbox, on an invalid port, and when the policy denies it (rule
// PortForwardRequest).
func portForwardCheck(g *policy.Gate) portforward.CheckFunc {
	return func(ctx context.Context, port uint16) error {
		return g.Check(ctx, portForwardMethod, &api.PortForwardRequest{Port: uint32(port)})
	}
}

// errorCodes sends every error with the gRPC code of its errdefs class, so
// the host can tell a missing disk (NotFound) from a bad request
// (InvalidArgument); a handler's plain error would reach it as Unknown.
func errorCodes(ctx context.Context, unmarshal ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
	resp, err := method(ctx, unmarshal)
	return resp, errgrpc.ToGRPC(err)
}

// namespaceInterceptor gives requests without a containerd namespace the
// default one and refuses namespaces that are not plain names (the
// namespace becomes part of runc's state path).
func namespaceInterceptor(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
	ns, ok := namespaces.Namespace(ctx)
	if !ok || ns == "" {
		ctx = namespaces.WithNamespace(ctx, DefaultNamespace)
	} else if err := api.ValidateID("containerd namespace", ns); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return method(ctx, unmarshal)
}

// Serve answers stream connections on streams and ttrpc on agent until
// Close. Health reports readiness from this moment.
func (a *Agent) Serve(ctx context.Context, agent, streams net.Listener) error {
	go func() {
		if err := a.streams.Serve(streams); err != nil {
			log.G(ctx).WithError(err).Error("stream port: no longer accepting")
		}
	}()
	if a.now != nil {
		a.clock.ready.Store(a.now())
	}
	return a.srv.Serve(ctx, agent)
}

// JudgeWorkload asks the policy in force about a request of the pod's own
// containers to the workload API, once the owner's init-data is in force.
func (a *Agent) JudgeWorkload(ctx context.Context, req proto.Message) error {
	return a.gate.JudgeWorkload(ctx, req)
}

// ServePortForward answers port-forward connections (vsock port
// api.PortForwardPort) on l until it is closed; Close ends the live ones.
func (a *Agent) ServePortForward(ctx context.Context, l net.Listener) error {
	return a.forward.Serve(ctx, l)
}

// ServeConn serves the agent API on a connection the agent opened itself
// (to the host's ReadyPort), next to the listener Serve accepts on, until
// the connection or the server closes.
func (a *Agent) ServeConn(ctx context.Context, conn net.Conn) {
	if a.now != nil {
		a.clock.announced.Store(a.now())
		conn = &firstExchange{Conn: conn, now: a.now, clock: a.clock}
	}
	l := &connListener{conn: conn, addr: conn.LocalAddr(), closed: make(chan struct{})}
	go a.srv.Serve(ctx, l)
}

// firstExchange records when the first read and the first write on the
// connection completed: the host's first request and the agent's answer.
type firstExchange struct {
	net.Conn
	now   func() uint64
	clock *bootClock
}

func (c *firstExchange) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.clock.firstRequest.Load() == 0 {
		c.clock.firstRequest.CompareAndSwap(0, c.now())
	}
	return n, err
}

func (c *firstExchange) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 && c.clock.firstReply.Load() == 0 {
		c.clock.firstReply.CompareAndSwap(0, c.now())
	}
	return n, err
}

// connListener hands out one connection, then blocks until closed (the
// server closes its listeners on Shutdown).
type connListener struct {
	mu     sync.Mutex
	conn   net.Conn
	addr   net.Addr
	once   sync.Once
	closed chan struct{}
}

func (l *connListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// Close ends the event stream, lets in-flight answers go out until ctx is
// done, and stops serving.
func (a *Agent) Close(ctx context.Context) error {
	a.queue.Close()
	a.forward.Close()
	err := a.srv.Shutdown(ctx)
	if err != nil {
		a.srv.Close()
	}
	a.sd.Shutdown()
	return err
}
