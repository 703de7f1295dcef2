package sandbox

import (
	"context"
	"fmt"
	"os"
	"path"
	"slices"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coco-runtime/coco/virtcontainers/agent/api"
)

// volumeSyncInterval is how often the shim looks at the kubelet's ..data
// link of each copied file volume. One readlink per volume per tick: on
// the development machine a pod with 4 volumes costs ~10 µs of CPU a
// second, and an update reaches the guest within the interval plus the
// copy (a ~100 ms round trip under TCG). inotify would save the polling
// but needs a watch per directory and a reader per shim for a gain of at
// most this interval, against the kubelet's own sync period of a minute.
var volumeSyncInterval = time.Second

// Timeouts of the calls made on the shim's own initiative.
const (
	volumeUpdateTimeout  = 10 * time.Second
	terminationTimeout   = 5 * time.Second
	maxTerminationOnHost = api.MaxTerminationMessage
)

// syncedVolume is one kubelet file volume of a container, kept in sync.
type syncedVolume struct {
	source, dest string
	version      string // ..data's target when last copied
}

// termLog is a container's termination message file: the kubelet's host
// file bind-mounted at dest.
type termLog struct{ hostPath, dest string }

// volumeSync keeps the file volumes of a pod's running containers in sync
// and copies termination messages back when they exit.
type volumeSync struct {
	mu       sync.Mutex
	cancels  map[string]context.CancelFunc // container id → its watcher
	termLogs map[string]termLog
}

// isTerminationLog says whether a bind mount source is the kubelet's
// termination message file: <root>/pods/<uid>/containers/<name>/<id>.
func isTerminationLog(source string) bool {
	p := path.Clean(source)
	containers := path.Dir(path.Dir(p))
	return path.Base(containers) == "containers" && path.Base(path.Dir(path.Dir(containers))) == "pods"
}

// watch starts keeping container id's file volumes in sync and records
// its termination message file. update sends one volume's new files.
func (v *volumeSync) watch(ctx context.Context, id string, sp *specs.Spec, update func(context.Context, *api.UpdateVolumeRequest) error) {
	var vols []*syncedVolume
	var term *termLog
	for _, m := range sp.Mounts {
		if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
			continue
		}
		if isFileVolume(m.Source) {
			if target, err := os.Readlink(path.Join(m.Source, atomicData)); err == nil {
				vols = append(vols, &syncedVolume{source: m.Source, dest: path.Clean(m.Destination), version: target})
			}
			continue
		}
		if isTerminationLog(m.Source) {
			term = &termLog{hostPath: m.Source, dest: path.Clean(m.Destination)}
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if term != nil {
		if v.termLogs == nil {
			v.termLogs = map[string]termLog{}
		}
		v.termLogs[id] = *term
	}
	if len(vols) == 0 {
		return
	}
	if v.cancels == nil {
		v.cancels = map[string]context.CancelFunc{}
	}
	if old := v.cancels[id]; old != nil {
		old()
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v.cancels[id] = cancel
	go syncVolumes(wctx, id, vols, update)
}

// syncVolumes polls each volume's ..data link and sends a volume whose
// link moved. A refused or failed update is logged once per version and
// not retried: the next version is sent when the kubelet writes one.
func syncVolumes(ctx context.Context, id string, vols []*syncedVolume, update func(context.Context, *api.UpdateVolumeRequest) error) {
	t := time.NewTicker(volumeSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, vol := range vols {
			target, err := os.Readlink(path.Join(vol.source, atomicData))
			if err != nil || target == vol.version {
				continue
			}
			vol.version = target
			err = sendVolume(ctx, id, vol, update)
			entry := log.G(ctx).WithField("container", id).WithField("volume", vol.dest)
			if err != nil {
				entry.WithError(err).Warn("volume update not applied in the guest")
			} else {
				entry.Debug("volume updated in the guest")
			}
		}
	}
}

// sendVolume reads a volume's current files (the same reader and bounds
// as at creation) and sends them.
func sendVolume(ctx context.Context, id string, vol *syncedVolume, update func(context.Context, *api.UpdateVolumeRequest) error) error {
	budget := maxHostFiles
	files, err := readFileVolume(vol.source, vol.dest, &budget)
	if err != nil {
		return err
	}
	r := &api.UpdateVolumeRequest{ContainerId: id, Destination: vol.dest, Files: files}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("volume %s: %w", vol.dest, err)
	}
	ctx, cancel := context.WithTimeout(ctx, volumeUpdateTimeout)
	defer cancel()
	return update(ctx, r)
}

// stop ends container id's watcher; the termination log stays recorded.
func (v *volumeSync) stop(id string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if c := v.cancels[id]; c != nil {
		c()
		delete(v.cancels, id)
	}
}

// stopAll ends every watcher (the pod is going away).
func (v *volumeSync) stopAll() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, c := range v.cancels {
		c()
		delete(v.cancels, id)
	}
}

// forget ends the watcher and drops the termination log (task deleted).
func (v *volumeSync) forget(id string) {
	v.stop(id)
	v.mu.Lock()
	delete(v.termLogs, id)
	v.mu.Unlock()
}

// exited stops container id's sync and copies its termination message to
// the kubelet's host file, before containerd hears of the exit (the
// kubelet reads the file when it sees the container exited).
func (v *volumeSync) exited(ctx context.Context, id string, read func(context.Context, *api.ReadTerminationMessageRequest) (*api.ReadTerminationMessageResponse, error)) {
	v.stop(id)
	v.mu.Lock()
	term, ok := v.termLogs[id]
	v.mu.Unlock()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, terminationTimeout)
	defer cancel()
	resp, err := read(ctx, &api.ReadTerminationMessageRequest{ContainerId: id, Destination: term.dest})
	if err == nil {
		err = writeTerminationLog(term.hostPath, resp.GetContent())
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("container", id).Warn("termination message not copied back")
	}
}

// writeTerminationLog writes the guest's message (bounded again: the
// guest is not trusted to keep its own bound) into the kubelet's file, a
// regular file reached without following a link.
func writeTerminationLog(hostPath string, content []byte) error {
	if len(content) == 0 {
		return nil
	}
	if len(content) > maxTerminationOnHost {
		content = content[:maxTerminationOnHost]
	}
	f, err := os.OpenFile(hostPath, os.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", hostPath)
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err = f.Write(content)
	return err
}

// isInitExit says whether an event is the exit of a container's own
// process (not an exec's), and of which container.
func isInitExit(msg any) (string, bool) {
	e, ok := msg.(*eventstypes.TaskExit)
	if !ok || e.ContainerID == "" || e.ID != e.ContainerID {
		return "", false
	}
	return e.ContainerID, true
}

// updateVolume and readTerminationMessage make the calls on the sandbox's
// current agent connection.
func (s *vmSandbox) updateVolume(ctx context.Context, r *api.UpdateVolumeRequest) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	_, err = c.Agent().UpdateVolume(ctx, r)
	return err
}

func (s *vmSandbox) readTerminationMessage(ctx context.Context, r *api.ReadTerminationMessageRequest) (*api.ReadTerminationMessageResponse, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	return c.Agent().ReadTerminationMessage(ctx, r)
}
