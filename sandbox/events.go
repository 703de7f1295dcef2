package sandbox

import (
	"sort"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// liveProcs tracks the guest processes that started and have not exited, so
// that a VM that dies never loses an exit: containerd gets a TaskExit for
// each, execs before their container's init.
type liveProcs struct {
	mu    sync.Mutex
	procs map[procKey]uint32
}

type procKey struct{ container, id string }

func (l *liveProcs) observe(msg any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.procs == nil {
		l.procs = map[procKey]uint32{}
	}
	switch e := msg.(type) {
	case *eventstypes.TaskStart:
		l.procs[procKey{e.ContainerID, e.ContainerID}] = e.Pid
	case *eventstypes.TaskExecStarted:
		l.procs[procKey{e.ContainerID, e.ExecID}] = e.Pid
	case *eventstypes.TaskExit:
		delete(l.procs, procKey{e.ContainerID, e.ID})
	}
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
