package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/digitalocean/go-qemu/qmp"
)

// monitor wraps go-qemu's QMP socket monitor with what the driver needs on
// top: commands bounded by a context (go-qemu's Run blocks until QEMU
// answers), an event pump (go-qemu's event channel is unbuffered and stalls
// command replies when nobody reads it), and the events that explain why
// QEMU exited.
type monitor struct {
	sock *qmp.SocketMonitor
	// cmdMu serialises commands so a timed-out command cannot leave its
	// reply to be read by the next one; after a timeout the monitor is
	// closed instead.
	cmdMu sync.Mutex

	mu       sync.Mutex
	closed   bool
	shutdown string // reason of the last SHUTDOWN event ("guest-shutdown", ...)
	panicked bool
	resets   int
	deleted  map[string]chan struct{} // DEVICE_DELETED waiters by device id
	pumpDone chan struct{}
}

// dialMonitor connects to QEMU's QMP socket, retrying while QEMU creates it,
// and negotiates capabilities. alive reports whether QEMU is still running
// so a QEMU that dies at startup ends the wait at once.
func dialMonitor(ctx context.Context, path string, alive func() bool) (*monitor, error) {
	var last error
	for {
		sm, err := qmp.NewSocketMonitor("unix", path, time.Second)
		if err == nil {
			done := make(chan error, 1)
			go func() { done <- sm.Connect() }()
			select {
			case err = <-done:
			case <-ctx.Done():
				sm.Disconnect()
				<-done
				err = ctx.Err()
			}
			if err == nil {
				return newMonitor(sm)
			}
			sm.Disconnect()
		}
		last = err
		if !alive() {
			return nil, fmt.Errorf("QMP %s: QEMU exited before its monitor answered: %w", path, last)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("QMP %s: no answer: %w (last error: %v)", path, ctx.Err(), last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func newMonitor(sm *qmp.SocketMonitor) (*monitor, error) {
	events, err := sm.Events(context.Background())
	if err != nil {
		sm.Disconnect()
		return nil, err
	}
	m := &monitor{sock: sm, deleted: map[string]chan struct{}{}, pumpDone: make(chan struct{})}
	go m.pump(events)
	return m, nil
}

// pump records the events that matter and drains the rest. The channel
// closes when the QMP connection ends (QEMU exited or close was called).
func (m *monitor) pump(events <-chan qmp.Event) {
	defer close(m.pumpDone)
	for ev := range events {
		m.mu.Lock()
		switch ev.Event {
		case "SHUTDOWN":
			if r, ok := ev.Data["reason"].(string); ok {
				m.shutdown = r
			} else {
				m.shutdown = "unknown"
			}
		case "GUEST_PANICKED":
			m.panicked = true
		case "RESET":
			m.resets++
		case "DEVICE_DELETED":
			if id, ok := ev.Data["device"].(string); ok {
				if ch, ok := m.deleted[id]; ok {
					close(ch)
					delete(m.deleted, id)
				}
			}
		}
		m.mu.Unlock()
		log.L.WithField("event", ev.Event).WithField("data", ev.Data).Debug("qemu: QMP event")
	}
}

// exitEvents returns what the events said before QEMU exited.
func (m *monitor) exitEvents() (shutdown string, panicked bool) {
	if m == nil {
		return "", false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shutdown, m.panicked
}

// awaitDeleted registers interest in DEVICE_DELETED for id before the
// device_del that triggers it, so the event cannot be missed.
func (m *monitor) awaitDeleted(id string) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := make(chan struct{})
	m.deleted[id] = ch
	return ch
}

func (m *monitor) forgetDeleted(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.deleted, id)
}

var errMonitorClosed = errors.New("QMP monitor closed")

// do runs f (one QMP exchange) under ctx. If ctx ends first the connection
// is closed, which unblocks f and makes later commands fail fast.
func (m *monitor) do(ctx context.Context, what string, f func() error) error {
	m.cmdMu.Lock()
	defer m.cmdMu.Unlock()
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return fmt.Errorf("QMP %s: %w", what, errMonitorClosed)
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("QMP %s: %w", what, err)
		}
		return nil
	case <-ctx.Done():
		m.close()
		<-done
		return fmt.Errorf("QMP %s: %w", what, ctx.Err())
	}
}

// run sends a QMP command through Monitor.Run and decodes its "return" into
// out when out is not nil. Every command goes this way, not through go-qemu's
// generated qmp/raw API: that package lacks the TEE commands and types some
// awkwardly (blockdev-add's union, device_add's free-form properties), and
// linking it for the few plain commands (stop, cont, quit, system_powerdown,
// query-status) added ~420 KB of code and tables to the shim binary, which
// each per-pod shim process maps.
func (m *monitor) run(ctx context.Context, command string, args any, out any) error {
	b, err := json.Marshal(qmp.Command{Execute: command, Args: args})
	if err != nil {
		return err
	}
	return m.do(ctx, command, func() error {
		reply, err := m.sock.Run(b)
		if err != nil {
			return err
		}
		if out == nil {
			return nil
		}
		var r struct {
			Return json.RawMessage `json:"return"`
		}
		if err := json.Unmarshal(reply, &r); err != nil {
			return err
		}
		return json.Unmarshal(r.Return, out)
	})
}

func (m *monitor) close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.mu.Unlock()
	// go-qemu's Disconnect drains the reply stream, which only ends once
	// its reader sees the connection close, so this returns promptly.
	_ = m.sock.Disconnect()
}

// isClosedConn reports errors that mean QEMU went away mid-command, which
// is the expected outcome of "quit".
func isClosedConn(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, errMonitorClosed)
}
