// Package events publishes task events to containerd in the order they were
// produced.
//
// containerd's own shim publisher re-queues a failed event on a timer, so a
// retried event can overtake later ones. A pod's exits must reach containerd
// in the guest's order (init last), so this publisher delivers one event at a
// time and retries it in place before moving on.
package events

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc/status"
)

// Publisher is the subset of containerd's events.Publisher the shim needs.
type Publisher interface {
	Publish(ctx context.Context, topic string, event any) error
}

// Retry policy for one event: containerd restarting takes a few seconds, so
// keep trying for about a minute before giving the event up.
const (
	forwardTimeout = 5 * time.Second
	firstBackoff   = 100 * time.Millisecond
	maxBackoff     = 5 * time.Second
	maxAttempts    = 20
)

// TTRPCPublisher forwards events to containerd's ttrpc events service at
// TTRPC_ADDRESS. Publish blocks until the event is delivered, so callers that
// publish from a single goroutine get in-order delivery.
type TTRPCPublisher struct {
	address string

	mu     sync.Mutex // serialises Publish: one event in flight at a time
	client *ttrpc.Client
}

// NewTTRPCPublisher returns a publisher that connects on first use.
func NewTTRPCPublisher(address string) (*TTRPCPublisher, error) {
	if address == "" {
		return nil, fmt.Errorf("no containerd ttrpc address: TTRPC_ADDRESS is not set")
	}
	return &TTRPCPublisher{address: strings.TrimPrefix(address, "unix://")}, nil
}

// Publish delivers one event, retrying with backoff; it gives up after
// maxAttempts or as soon as ctx is done. ctx must carry the containerd
// namespace.
func (p *TTRPCPublisher) Publish(ctx context.Context, topic string, event any) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	a, err := typeurl.MarshalAnyToProto(event)
	if err != nil {
		return fmt.Errorf("marshal %s event: %w", topic, err)
	}
	req := &eventsapi.ForwardRequest{Envelope: &types.Envelope{
		Timestamp: protobuf.ToTimestamp(time.Now()),
		Namespace: ns,
		Topic:     topic,
		Event:     a,
	}}

	p.mu.Lock()
	defer p.mu.Unlock()
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("publish %s: %w (last error: %v)", topic, cerr, err)
		}
		err = p.forward(ctx, req)
		if err == nil {
			return nil
		}
		if attempt == maxAttempts {
			return fmt.Errorf("publish %s: giving up after %d attempts: %w", topic, attempt, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// forward sends one request, (re)connecting first if needed; p.mu is held.
// The dial honours ctx, so a cancelled publisher never waits on a
// containerd that is gone.
func (p *TTRPCPublisher) forward(ctx context.Context, req *eventsapi.ForwardRequest) error {
	if p.client == nil {
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, forwardTimeout)
		conn, err := d.DialContext(dctx, "unix", p.address)
		cancel()
		if err != nil {
			return err
		}
		p.client = ttrpc.NewClient(conn)
	}
	fctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	_, err := eventsapi.NewTTRPCEventsClient(p.client).Forward(fctx, req)
	if err != nil {
		if _, isStatus := status.FromError(err); !isStatus {
			// Transport trouble (containerd restarting): reconnect next time.
			p.client.Close()
			p.client = nil
		}
	}
	return err
}

// Close closes the connection to containerd.
func (p *TTRPCPublisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		return nil
	}
	err := p.client.Close()
	p.client = nil
	return err
}
