// Package events holds the guest's task events in order until the host reads
// them. The task service publishes into a Queue; the agent's Events stream
// drains it. Nothing is dropped: a full queue makes Publish wait (the task
// service then waits too), which is the back-pressure the host sees as a
// slow event stream rather than a lost exit.
package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	cevents "github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// DefaultCapacity bounds the number of undelivered events.
const DefaultCapacity = 4096

// ErrClosed is returned by Publish and Next after Close.
var ErrClosed = errors.New("event queue closed")

// Queue is an ordered, bounded, never-dropping event queue with one reader
// at a time. It implements containerd's shim.Publisher.
type Queue struct {
	mu       sync.Mutex
	notFull  *sync.Cond
	changed  chan struct{} // closed and replaced whenever items or closed change
	items    []*api.Event
	capacity int
	seq      uint64
	closed   bool
	now      func() time.Time
}

// New returns a queue holding at most capacity undelivered events.
func New(capacity int) *Queue {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	q := &Queue{capacity: capacity, changed: make(chan struct{}), now: time.Now}
	q.notFull = sync.NewCond(&q.mu)
	return q
}

func (q *Queue) signal() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// Publish appends an event, waiting while the queue is full. The wait ends
// only when the reader makes room or the queue is closed: an exit must not
// be lost because a context expired.
func (q *Queue) Publish(ctx context.Context, topic string, event cevents.Event) error {
	a, err := typeurl.MarshalAnyToProto(event)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", topic, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) >= q.capacity && !q.closed {
		q.notFull.Wait()
	}
	if q.closed {
		return ErrClosed
	}
	q.seq++
	q.items = append(q.items, &api.Event{Topic: topic, Event: a, Timestamp: timestamppb.New(q.now()), Seq: q.seq})
	q.signal()
	return nil
}

// Peek returns the oldest undelivered event, waiting for one until ctx is
// done. The event stays queued until Ack; a reader that fails to deliver it
// leaves it for the next reader.
func (q *Queue) Peek(ctx context.Context) (*api.Event, error) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			e := q.items[0]
			q.mu.Unlock()
			return e, nil
		}
		if q.closed {
			q.mu.Unlock()
			return nil, ErrClosed
		}
		ch := q.changed
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Ack removes the event with sequence number seq once it was delivered.
func (q *Queue) Ack(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 && q.items[0].Seq == seq {
		q.items[0] = nil
		q.items = q.items[1:]
		q.notFull.Broadcast()
	}
}

// Len is the number of undelivered events.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Close wakes every waiter; later Publish calls fail. Undelivered events
// can still be read until the queue is empty.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		q.notFull.Broadcast()
		q.signal()
	}
	return nil
}

// Drain sends events to send in order until ctx is done, the queue is
// closed and empty, or send fails. An event is removed only after send
// returned nil for it.
func (q *Queue) Drain(ctx context.Context, send func(*api.Event) error) error {
	for {
		e, err := q.Peek(ctx)
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return nil
			}
			return err
		}
		if err := send(e); err != nil {
			return fmt.Errorf("send event %d (%s): %w", e.Seq, e.Topic, err)
		}
		q.Ack(e.Seq)
	}
}

// Reader lets one stream drain the queue at a time; a new stream takes over
// from an older one (the host reconnected) by cancelling it.
type Reader struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	gen    uint64
}

// Acquire cancels any current reader and returns a context for the new one
// plus its release function.
func (r *Reader) Acquire(ctx context.Context) (context.Context, func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		r.cancel()
	}
	r.gen++
	gen := r.gen
	ctx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	return ctx, func() {
		cancel()
		r.mu.Lock()
		if r.gen == gen {
			r.cancel = nil
		}
		r.mu.Unlock()
	}
}
