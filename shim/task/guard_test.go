package task

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/coco-runtime/coco/sandbox"
)

// syncBuffer is a log sink the forwarding goroutine writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// guardHarness boots pod1 with a running container "app" and returns the
// harness and the shim's log.
func guardHarness(t *testing.T) (*harness, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	lg := logrus.New()
	lg.SetOutput(logs)
	h := newHarnessCtx(t, log.WithLogger(context.Background(), logrus.NewEntry(lg)))
	h.bootPod("pod1")
	b := h.bundle("app", containerAnnotations("pod1"), "sleep")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart)
	return h, logs
}

// A hostile guest forges exits for processes the shim does not own (another
// pod's container, an exec never asked for), a second exit for a live
// container, and containerd events that are not the guest's to send. None
// reaches containerd; the real events around them do, and the container the
// forged exit named is still running.
func TestForgedGuestEventsAreDropped(t *testing.T) {
	h, logs := guardHarness(t)
	fake := h.fake()
	now := protobuf.ToTimestamp(time.Now())
	forged := []sandbox.Event{
		{Topic: tExit, Message: &eventstypes.TaskExit{ContainerID: "other-pods-container", ID: "other-pods-container", ExitStatus: 0, ExitedAt: now}},
		{Topic: tExit, Message: &eventstypes.TaskExit{ContainerID: "app", ID: "exec-never-created", ExitStatus: 0, ExitedAt: now}},
		{Topic: tExecStarted, Message: &eventstypes.TaskExecStarted{ContainerID: "app", ExecID: "exec-never-created", Pid: 7}},
		{Topic: tOOM, Message: &eventstypes.TaskOOM{ContainerID: "other-pods-container"}},
		{Topic: tDelete, Message: &eventstypes.TaskDelete{ContainerID: "other-pods-container"}},
		{Topic: "/images/delete", Message: &eventstypes.ImageDelete{Name: "docker.io/library/busybox:latest"}},
		{Topic: "/containers/delete", Message: &eventstypes.ContainerDelete{ID: "app"}},
	}
	for _, ev := range forged {
		fake.Inject(ev)
	}
	// A real event after the forged ones: once it is published, every
	// forged event before it has been judged.
	fake.OOM("app")
	h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tOOM)

	st, err := h.svc.State(h.ctx, &taskAPI.StateRequest{ID: "app"})
	if err != nil || st.Status.String() != "RUNNING" {
		t.Fatalf("State of app after forged events = %v, %v; want running", st, err)
	}
	if got := logs.String(); !strings.Contains(got, "other-pods-container") || !strings.Contains(got, "may not send") {
		t.Fatalf("the shim log does not say what it dropped:\n%s", got)
	}

	// The real exit is published once; a second one for the same
	// process is a lie.
	if _, err := h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "app", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tOOM, tExit)
	fake.Inject(sandbox.Event{Topic: tExit, Message: &eventstypes.TaskExit{ContainerID: "app", ID: "app", ExitStatus: 0, ExitedAt: now}})
	fake.OOM("pod1")
	evs := h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tOOM, tExit, tOOM)
	if e := exitOf(t, evs[5]); e.ExitStatus != 128+9 {
		t.Fatalf("published exit status %d, want the real 137", e.ExitStatus)
	}
	wr, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "app"})
	if err != nil || wr.ExitStatus != 128+9 {
		t.Fatalf("Wait = %v, %v; want the real exit 137, not the forged 0", wr, err)
	}

	// After Delete, one trailing TaskDelete from the guest is expected;
	// a second is not.
	if _, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tOOM, tExit, tOOM, tDelete)
	fake.Inject(sandbox.Event{Topic: tDelete, Message: &eventstypes.TaskDelete{ContainerID: "app"}})
	fake.OOM("pod1")
	h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tOOM, tExit, tOOM, tDelete, tOOM)
}

// The topic is the event type's, never the guest's: an OOM notice sent under
// /tasks/exit is published as /tasks/oom, and an event without a topic gets
// its type's.
func TestGuestTopicIsIgnored(t *testing.T) {
	h, logs := guardHarness(t)
	h.fake().Inject(sandbox.Event{Topic: tExit, Message: &eventstypes.TaskOOM{ContainerID: "app"}})
	h.fake().Inject(sandbox.Event{Message: &eventstypes.TaskPaused{ContainerID: "app"}})
	evs := h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tOOM, tPaused)
	if _, ok := evs[4].(*eventstypes.TaskOOM); !ok {
		t.Fatalf("published %T under %s", evs[4], tOOM)
	}
	if !strings.Contains(logs.String(), "does not match its type") {
		t.Fatalf("the mismatched topic is not logged:\n%s", logs.String())
	}
}

// A guest that floods forged events gets a bounded number of lines into
// the shim's log, however many it sends.
func TestForgedEventFloodLogIsBounded(t *testing.T) {
	h, logs := guardHarness(t)
	fake := h.fake()
	const flood = 5000
	for i := range flood {
		fake.Inject(sandbox.Event{Topic: tExit, Message: &eventstypes.TaskExit{ContainerID: "ghost", ID: strings.Repeat("x", i%50)}})
	}
	fake.OOM("app")
	h.pub.waitTopics(t, tCreate, tStart, tCreate, tStart, tOOM)
	if n := strings.Count(logs.String(), "\n"); n > 20 {
		t.Fatalf("%d forged events put %d lines into the shim log; want a small bound", flood, n)
	}
}
