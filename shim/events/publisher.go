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
	"sync"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/ttrpcutil"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
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
	mu     sync.Mutex // serialises Publish: one event in flight at a time
	client *ttrpcutil.Client
}

// NewTTRPCPublisher connects lazily to containerd's ttrpc address.
func NewTTRPCPublisher(address string) (*TTRPCPublisher, error) {
	if address == "" {
		return nil, fmt.Errorf("no containerd ttrpc address: TTRPC_ADDRESS is not set")
	}
	c, err := ttrpcutil.NewClient(address)
	if err != nil {
		return nil, err
	}
	return &TTRPCPublisher{client: c}, nil
}

// Publish delivers one event, retrying with backoff; it gives up after
// maxAttempts or when ctx is done. ctx must carry the containerd namespace.
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
		err = p.forward(ctx, req)
		if err == nil {
			return nil
		}
		if attempt == maxAttempts {
			return fmt.Errorf("publish %s: giving up after %d attempts: %w", topic, attempt, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w (last error: %v)", topic, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (p *TTRPCPublisher) forward(ctx context.Context, req *eventsapi.ForwardRequest) error {
	svc, err := p.client.EventsService()
	if err == nil {
		fctx, cancel := context.WithTimeout(ctx, forwardTimeout)
		_, err = svc.Forward(fctx, req)
		cancel()
		if err == nil {
			return nil
		}
	}
	if err != ttrpc.ErrClosed {
		return err
	}
	// containerd restarted: reconnect once and let the caller's retry loop
	// handle a second failure.
	if rerr := p.client.Reconnect(); rerr != nil {
		return rerr
	}
	return err
}

// Close closes the connection to containerd.
func (p *TTRPCPublisher) Close() error {
	return p.client.Close()
}
