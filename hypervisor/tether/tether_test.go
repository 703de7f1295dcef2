package tether

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChildSurvivesItsCallersThread: a child started from a goroutine whose
// thread then ends (locked and exiting, as the network code's threads may)
// keeps running: its parent-death signal follows the tether's thread.
func TestChildSurvivesItsCallersThread(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread exits with the goroutine
		errc <- Start(cmd)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("child died with its caller's thread: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if got := cmd.SysProcAttr.Pdeathsig; got != syscall.SIGKILL {
		t.Errorf("child's parent-death signal is %v, want SIGKILL", got)
	}
}

// TestChildDiesWithProcess: when the process that tethered a child dies by
// SIGKILL, the child is killed too.
func TestChildDiesWithProcess(t *testing.T) {
	if os.Getenv("TETHER_HELPER") == "1" {
		cmd := exec.Command("sleep", "60")
		if err := Start(cmd); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(cmd.Process.Pid)
		time.Sleep(time.Minute)
		return
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestChildDiesWithProcess$")
	helper.Env = append(os.Environ(), "TETHER_HELPER=1")
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		helper.Process.Kill()
		t.Fatalf("helper said %q", buf[:n])
	}
	helper.Process.Kill()
	helper.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return // gone, or a zombie waiting for init
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("child %d still running after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
