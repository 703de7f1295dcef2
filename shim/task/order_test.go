package task

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
)

// orderRounds is how many pod lifecycles TestExitOrderUnderRaces runs;
// COCO_ORDER_ROUNDS sets it (the long variant: `make test-order`).
func orderRounds(t *testing.T) int {
	if v := os.Getenv("COCO_ORDER_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("COCO_ORDER_ROUNDS=%q: want a positive count", v)
		}
		return n
	}
	if testing.Short() {
		return 20
	}
	return 80
}

// TestExitOrderUnderRaces: for every container and exec, containerd gets
// TaskExit before Wait returns and before TaskDelete, whether the process
// exits by itself, is killed, or dies with the VM while the pod is being
// stopped, with a publisher that takes its time (containerd under load).
// Each round races the exits against Wait, Kill, Delete and the pod's Stop.
func TestExitOrderUnderRaces(t *testing.T) {
	for round := range orderRounds(t) {
		if !t.Run(fmt.Sprintf("round-%d", round), func(t *testing.T) { orderRound(t, round) }) {
			return
		}
	}
}

func orderRound(t *testing.T, round int) {
	h := newHarness(t)
	h.pub.delay = time.Duration(100+round%7*150) * time.Microsecond
	h.bootPod("pod")
	b := h.bundle("app", containerAnnotations("pod"), "sleep")
	if _, err := h.svc.Create(h.ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "app"}); err != nil {
		t.Fatal(err)
	}
	procs := []string{"", "quick", "long"} // init, an exec that exits at once, one that runs
	var wg sync.WaitGroup
	waitErrs := make(chan error, len(procs))
	wait := func(exec string) {
		defer wg.Done()
		if _, err := h.svc.Wait(h.ctx, &taskAPI.WaitRequest{ID: "app", ExecID: exec}); err != nil {
			waitErrs <- fmt.Errorf("Wait %q: %v", exec, err)
			return
		}
		if !h.pub.hasExit("app", exec) {
			waitErrs <- fmt.Errorf("Wait for %q returned before containerd had its TaskExit", exec)
		}
	}
	wg.Add(1)
	go wait("")
	for _, ex := range []struct{ id, cmd string }{{"quick", "exit"}, {"long", "sleep"}} {
		if _, err := h.svc.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "app", ExecID: ex.id, Spec: procSpec(t, ex.cmd, "3")}); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go wait(ex.id)
		if _, err := h.svc.Start(h.ctx, &taskAPI.StartRequest{ID: "app", ExecID: ex.id}); err != nil {
			t.Fatal(err)
		}
	}
	// Delete each process as soon as it may be deleted, racing the rest.
	deleted := make(chan string, len(procs))
	for _, exec := range procs[1:] {
		go func() {
			h.deleteWhenStopped("app", exec)
			deleted <- exec
		}()
	}
	switch round % 3 {
	case 0: // kill: the exec, then the container
		h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "app", ExecID: "long", Signal: uint32(syscall.SIGKILL)})
		h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "app", Signal: uint32(syscall.SIGTERM)})
	case 1: // the pod is stopped under its running processes
		go h.svc.Kill(h.ctx, &taskAPI.KillRequest{ID: "app", Signal: uint32(syscall.SIGKILL)})
		ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		defer cancel()
		if err := h.pod.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	case 2: // the VM dies
		h.fake().Crash("qemu killed")
	}
	wg.Wait()
	close(waitErrs)
	for err := range waitErrs {
		t.Error(err)
	}
	for range procs[1:] {
		<-deleted
	}
	h.deleteWhenStopped("app", "")
	topics, evs := h.pub.snapshot()
	exitAt, deleteAt := map[string]int{}, map[string]int{}
	for i, ev := range evs {
		switch e := ev.(type) {
		case *eventstypes.TaskExit:
			exitAt[e.ContainerID+"/"+execOf(e.ContainerID, e.ID)] = i
		case *eventstypes.TaskDelete:
			deleteAt[e.ContainerID+"/"+execOf(e.ContainerID, e.ID)] = i
		}
	}
	for _, exec := range procs {
		k := "app/" + exec
		x, ok := exitAt[k]
		if !ok {
			t.Errorf("no TaskExit for %s; events %v", k, topics)
			continue
		}
		if d, ok := deleteAt[k]; ok && d < x {
			t.Errorf("TaskDelete before TaskExit for %s; events %v", k, topics)
		}
	}
}

// deleteWhenStopped retries Delete until the process is stopped and gone.
func (h *harness) deleteWhenStopped(id, exec string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := h.svc.Delete(h.ctx, &taskAPI.DeleteRequest{ID: id, ExecID: exec})
		if err == nil || isNotFound(errNative(err)) {
			if err == nil && !h.pub.hasExit(id, exec) {
				h.t.Errorf("Delete %s/%q returned before containerd had its TaskExit", id, exec)
			}
			return
		}
		if time.Now().After(deadline) {
			h.t.Errorf("Delete %s/%q: %v", id, exec, err)
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// hasExit says whether a TaskExit for the process was published.
func (r *recorder) hasExit(id, exec string) bool {
	_, evs := r.snapshot()
	for _, ev := range evs {
		if e, ok := ev.(*eventstypes.TaskExit); ok && e.ContainerID == id && execOf(id, e.ID) == exec {
			return true
		}
	}
	return false
}
