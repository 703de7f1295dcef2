package events

import (
	"context"
	"errors"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

func exit(id string) *eventstypes.TaskExit {
	return &eventstypes.TaskExit{ContainerID: id, ExitStatus: 3}
}

func TestOrderAndPayload(t *testing.T) {
	q := New(8)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if err := q.Publish(ctx, "/tasks/exit", exit(id)); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()
	var got []string
	err := q.Drain(ctx, func(e *api.Event) error {
		v, err := typeurl.UnmarshalAny(e.Event)
		if err != nil {
			return err
		}
		te := v.(*eventstypes.TaskExit)
		if e.Seq != uint64(len(got)+1) || e.Topic != "/tasks/exit" || te.ExitStatus != 3 {
			t.Errorf("event %d: seq %d topic %s %+v", len(got), e.Seq, e.Topic, te)
		}
		got = append(got, te.ContainerID)
		return nil
	})
	if err != nil || len(got) != 3 || got[0] != "a" || got[2] != "c" {
		t.Fatalf("drained %v, %v", got, err)
	}
	if err := q.Publish(ctx, "/tasks/exit", exit("d")); !errors.Is(err, ErrClosed) {
		t.Errorf("publish after close: %v", err)
	}
}

// A full queue makes Publish wait instead of dropping; reading makes room.
func TestBackPressureNeverDrops(t *testing.T) {
	q := New(2)
	ctx := context.Background()
	q.Publish(ctx, "t", exit("1"))
	q.Publish(ctx, "t", exit("2"))
	published := make(chan error, 1)
	go func() { published <- q.Publish(ctx, "t", exit("3")) }()
	select {
	case err := <-published:
		t.Fatalf("third publish returned %v while the queue was full", err)
	case <-time.After(50 * time.Millisecond):
	}
	e, _ := q.Peek(ctx)
	q.Ack(e.Seq)
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	if q.Len() != 2 {
		t.Errorf("len = %d, want 2", q.Len())
	}
}

// An event whose send failed stays for the next reader.
func TestFailedSendKeepsEvent(t *testing.T) {
	q := New(4)
	ctx := context.Background()
	q.Publish(ctx, "t", exit("1"))
	boom := errors.New("conn reset")
	if err := q.Drain(ctx, func(*api.Event) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("drain err = %v", err)
	}
	if q.Len() != 1 {
		t.Fatalf("event lost after failed send")
	}
	var r Reader
	ctx1, rel1 := r.Acquire(ctx)
	ctx2, rel2 := r.Acquire(ctx)
	defer rel2()
	if ctx1.Err() == nil {
		t.Error("older reader not cancelled by takeover")
	}
	rel1() // must not cancel the newer reader
	if ctx2.Err() != nil {
		t.Error("release of the old reader cancelled the new one")
	}
}
