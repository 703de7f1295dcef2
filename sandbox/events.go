package sandbox

import (
	"fmt"
	"sort"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxLiveProcs bounds liveProcs: a guest that reports starts of processes
// nobody asked for must not grow the shim's memory without end. Processes
// past the bound are not tracked here; when the VM goes, the task service
// still marks every process it knows exited.
const maxLiveProcs = 1 << 14

// checkEventIDs refuses an event whose container or process ids could not
// be containerd identifiers (at most 76 bytes of [A-Za-z0-9_.-]): the host
// never gave the guest such an id, and the ids end up as map keys and in
// log lines.
func checkEventIDs(msg any) error {
	if e, ok := msg.(interface{ GetContainerID() string }); ok {
		if err := checkID("container id", e.GetContainerID(), false); err != nil {
			return err
		}
	}
	if e, ok := msg.(interface{ GetExecID() string }); ok {
		if err := checkID("exec id", e.GetExecID(), false); err != nil {
			return err
		}
	}
	if e, ok := msg.(interface{ GetID() string }); ok {
		// TaskExit names the init by the container id, TaskDelete by "".
		if err := checkID("process id", e.GetID(), true); err != nil {
			return err
		}
	}
	return nil
}

func checkID(field, id string, emptyOK bool) error {
	const maxLen = 76 // containerd's identifiers limit
	switch {
	case id == "" && emptyOK:
		return nil
	case len(id) > maxLen:
		return fmt.Errorf("guest event %s is %d bytes long, more than an identifier's %d: %w", field, len(id), maxLen, errdefs.ErrInvalidArgument)
	}
	if err := identifiers.Validate(id); err != nil {
		return fmt.Errorf("guest event %s: %w", field, err)
	}
	return nil
}

// liveProcs tracks the guest processes that started and have not exited, so
// that a VM that dies never loses an exit: containerd gets a TaskExit for
// each, execs before their container's init.
type liveProcs struct {
	mu    sync.Mutex
	procs map[procKey]uint32
}

type procKey struct{ container, id string }

// observe records starts and exits. It reports false for a start it did
// not record because maxLiveProcs processes are already live.
func (l *liveProcs) observe(msg any) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.procs == nil {
		l.procs = map[procKey]uint32{}
	}
	var k procKey
	var pid uint32
	switch e := msg.(type) {
	case *eventstypes.TaskStart:
		k, pid = procKey{e.ContainerID, e.ContainerID}, e.Pid
	case *eventstypes.TaskExecStarted:
		k, pid = procKey{e.ContainerID, e.ExecID}, e.Pid
	case *eventstypes.TaskExit:
		delete(l.procs, procKey{e.ContainerID, e.ID})
		return true
	default:
		return true
	}
	if _, ok := l.procs[k]; !ok && len(l.procs) >= maxLiveProcs {
		return false
	}
	l.procs[k] = pid
	return true
}

// orphanExits returns a TaskExit for every live process (execs first, then
// inits, each group sorted for a stable order) and forgets them.
func (l *liveProcs) orphanExits(status uint32) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]procKey, 0, len(l.procs))
	for k := range l.procs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		ii, ij := keys[i].id == keys[i].container, keys[j].id == keys[j].container
		if ii != ij {
			return !ii // execs first
		}
		if keys[i].container != keys[j].container {
			return keys[i].container < keys[j].container
		}
		return keys[i].id < keys[j].id
	})
	now := timestamppb.New(time.Now())
	out := make([]Event, 0, len(keys))
	for _, k := range keys {
		out = append(out, Event{Topic: "/tasks/exit", Message: &eventstypes.TaskExit{
			ContainerID: k.container, ID: k.id, Pid: l.procs[k], ExitStatus: status, ExitedAt: now,
		}})
		delete(l.procs, k)
	}
	return out
}
