package sandbox

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"testing"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// hostileStream is a guest event stream that yields evs, then ends.
type hostileStream struct {
	ttrpc.ClientStream
	evs []*api.Event
}

func (h *hostileStream) Recv() (*api.Event, error) {
	if len(h.evs) == 0 {
		return nil, io.EOF
	}
	ev := h.evs[0]
	h.evs = h.evs[1:]
	return ev, nil
}

func guestEvent(t *testing.T, topic string, msg any) *api.Event {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(msg)
	if err != nil {
		t.Fatal(err)
	}
	return &api.Event{Topic: topic, Event: a}
}

// The pump refuses what no real guest sends, before it reaches the shim:
// ids that are not containerd identifiers (a megabyte long, or with a path
// in them), undecodable events with a huge type URL. Its log stays small
// and the set of live processes it tracks stays bounded however many
// starts the guest makes up.
func TestPumpEventsRefusesHostileEvents(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	var evs []*api.Event
	evs = append(evs,
		guestEvent(t, "/tasks/exit", &eventstypes.TaskExit{ContainerID: huge, ID: huge}),
		guestEvent(t, "/tasks/start", &eventstypes.TaskStart{ContainerID: "../../etc"}),
		guestEvent(t, "/tasks/exec-started", &eventstypes.TaskExecStarted{ContainerID: "app", ExecID: huge}),
		&api.Event{Topic: huge, Event: &anypb.Any{TypeUrl: huge, Value: []byte("junk")}},
	)
	const starts = maxLiveProcs + 1000
	for i := range starts {
		evs = append(evs, guestEvent(t, "/tasks/exec-started", &eventstypes.TaskExecStarted{ContainerID: "app", ExecID: "e" + strconv.Itoa(i)}))
	}

	var logs bytes.Buffer
	lg := logrus.New()
	lg.SetOutput(&logs)
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(lg))
	s := &vmSandbox{opts: Options{ID: "pod1"}, events: make(chan Event, 16)}
	go s.pumpEvents(ctx, &hostileStream{evs: evs})

	forwarded, orphans := 0, 0
	for ev := range s.events {
		if x, ok := ev.Message.(*eventstypes.TaskExecStarted); ok && x.ExecID != huge {
			forwarded++
			continue
		}
		if x, ok := ev.Message.(*eventstypes.TaskExit); ok && x.ExitStatus == orphanExitStatus && x.ContainerID == "app" {
			orphans++ // the VM is "gone": tracked processes exit
			continue
		}
		t.Fatalf("forwarded a hostile event: %T %.100v", ev.Message, ev.Message)
	}
	if forwarded != starts {
		t.Fatalf("forwarded %d well-formed starts, want %d (the shim's table judges those)", forwarded, starts)
	}
	if orphans != maxLiveProcs {
		t.Fatalf("%d processes tracked for orphan exits, want the bound %d", orphans, maxLiveProcs)
	}
	if logs.Len() > 16<<10 {
		t.Fatalf("hostile events put %d bytes into the log", logs.Len())
	}
	if !strings.Contains(logs.String(), "malformed id") || !strings.Contains(logs.String(), "not tracking more") {
		t.Fatalf("the log does not say what was refused:\n%s", logs.String())
	}
}

func TestLiveProcsIsBounded(t *testing.T) {
	var l liveProcs
	for i := range maxLiveProcs {
		if !l.observe(&eventstypes.TaskExecStarted{ContainerID: "c", ExecID: strconv.Itoa(i)}) {
			t.Fatalf("start %d refused below the bound", i)
		}
	}
	if l.observe(&eventstypes.TaskExecStarted{ContainerID: "c", ExecID: "one-more"}) {
		t.Fatal("a start past the bound was tracked")
	}
	if len(l.procs) != maxLiveProcs {
		t.Fatalf("%d tracked, want %d", len(l.procs), maxLiveProcs)
	}
}
