//go:build linux

package pausetask

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	cruntime "github.com/containerd/containerd/v2/core/runtime"
	"golang.org/x/sys/unix"
)

// TestPauseTaskExitOrder runs the sandbox container's life many times with
// a slow publisher and SIGKILL (no handler to wait for): TaskExit must be
// out before Wait returns and before TaskDelete, every time.
// COCO_ORDER_ROUNDS sets the count (the long variant: `make test-order`).
func TestPauseTaskExitOrder(t *testing.T) {
	needRoot(t)
	bin, err := buildPause()
	if err != nil {
		t.Fatal(err)
	}
	rounds := 25
	if v := os.Getenv("COCO_ORDER_ROUNDS"); v != "" {
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 1 {
			t.Fatalf("COCO_ORDER_ROUNDS=%q: want a positive count", v)
		}
	}
	bundle := writeBundle(t, sandboxSpec())
	for i := range rounds {
		rec := &recorder{delay: time.Duration(i%5) * time.Millisecond}
		s := New(Config{Binary: bin, Publisher: rec, Reaper: waitReaper{}})
		if err := pauseRound(s, rec, bundle); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
}

func pauseRound(s *Service, rec *recorder, bundle string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	created, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle})
	if err != nil {
		return err
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "sb"}); err != nil {
		unix.Kill(int(created.Pid), unix.SIGKILL)
		return err
	}
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "sb", Signal: uint32(unix.SIGKILL)}); err != nil {
		return err
	}
	if _, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "sb"}); err != nil {
		return err
	}
	if got := strings.Join(rec.got(), " "); !strings.Contains(got, cruntime.TaskExitEventTopic) {
		return fmt.Errorf("Wait returned before TaskExit was out (events %s)", got)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb"}); err != nil {
		return err
	}
	want := strings.Join([]string{cruntime.TaskCreateEventTopic, cruntime.TaskStartEventTopic, cruntime.TaskExitEventTopic, cruntime.TaskDeleteEventTopic}, " ")
	if got := strings.Join(rec.got(), " "); got != want {
		return fmt.Errorf("events %s, want %s", got, want)
	}
	return nil
}
