package pod

import (
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/runtime"
)

// guestTopic is the containerd topic of an event the guest may send. The
// topic follows from the event's type, never from the topic string the
// guest attached: containerd acts on the topic, and a guest that could
// choose it could pass one event off as another. Only task events are the
// guest's to report; anything else it decodes to (image, container,
// namespace or sandbox events of containerd's own) is refused.
func guestTopic(msg any) (string, bool) {
	switch msg.(type) {
	case *eventstypes.TaskCreate:
		return runtime.TaskCreateEventTopic, true
	case *eventstypes.TaskStart:
		return runtime.TaskStartEventTopic, true
	case *eventstypes.TaskExit:
		return runtime.TaskExitEventTopic, true
	case *eventstypes.TaskDelete:
		return runtime.TaskDeleteEventTopic, true
	case *eventstypes.TaskExecAdded:
		return runtime.TaskExecAddedEventTopic, true
	case *eventstypes.TaskExecStarted:
		return runtime.TaskExecStartedEventTopic, true
	case *eventstypes.TaskOOM:
		return runtime.TaskOOMEventTopic, true
	case *eventstypes.TaskPaused:
		return runtime.TaskPausedEventTopic, true
	case *eventstypes.TaskResumed:
		return runtime.TaskResumedEventTopic, true
	}
	return "", false
}
