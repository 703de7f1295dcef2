package sandbox

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coco-runtime/coco/hypervisor"
)

// Start's steps become phases.json's rows: each step lasts until the next
// begins, and the instants are on disk as soon as each is reached.
func TestPhaseObserverWritesTheRows(t *testing.T) {
	dir := t.TempDir()
	log := &phaseLog{dir: dir}
	o := newPhaseObserver(log)
	o.getenv = func(string) string { return "" }
	t0 := time.Unix(1000, 0)
	clock := t0
	o.now = func() time.Time { return clock }
	read := func() Phases { return readPhases(t, dir) }
	steps := []struct {
		name string
		ms   int
	}{{stepState, 1}, {stepNetwork, 20}, {stepVM, 30}, {stepAgent, 2000}, {stepSetup, 50}, {stepServe, 4}}
	for _, s := range steps {
		o.step(s.name)
		if s.name == stepAgent {
			// A start that hangs in the boot still shows when the VMM ran.
			if p := read(); p.VMExecAtNs != t0.Add(21*time.Millisecond).UnixNano() || p.StartAtNs != t0.UnixNano() || p.AgentUpAtNs != 0 {
				t.Fatalf("during the boot: %+v", p)
			}
		}
		clock = clock.Add(time.Duration(s.ms) * time.Millisecond)
	}
	o.done()
	p := read()
	if p.InitDataMs != 1 || p.NetworkMs != 20 || p.VMStartMs != 30 || p.AgentDialMs != 2000 || p.SetupMs != 50 || p.TotalMs != 2105 {
		t.Fatalf("durations %+v", p)
	}
	if p.AgentUpAtNs != t0.Add(2051*time.Millisecond).UnixNano() || p.SetupDoneAtNs != t0.Add(2101*time.Millisecond).UnixNano() {
		t.Fatalf("instants %+v", p)
	}
}

// The driver's launch instants land in phases.json as soon as the VM
// started: the vsock helper's start-up and the VMM's exec and monitor.
func TestPhaseObserverRecordsTheLaunch(t *testing.T) {
	dir := t.TempDir()
	o := newPhaseObserver(&phaseLog{dir: dir})
	t0 := time.Unix(2000, 0)
	o.launched(hypervisor.LaunchTimes{
		HelperStart: t0, HelperReady: t0.Add(12 * time.Millisecond),
		Exec: t0.Add(15 * time.Millisecond), MonitorReady: t0.Add(215 * time.Millisecond),
	})
	p := readPhases(t, dir)
	if p.VsockHelperMs != 12 || p.VMMExecAtNs != t0.Add(15*time.Millisecond).UnixNano() || p.VMMReadyAtNs != t0.Add(215*time.Millisecond).UnixNano() {
		t.Fatalf("launch rows %+v", p)
	}
	// A driver that says nothing leaves the rows at zero.
	o2 := newPhaseObserver(&phaseLog{dir: t.TempDir()})
	o2.launched(hypervisor.LaunchTimes{})
	if o2.log.data.VsockHelperMs != 0 || o2.log.data.VMMExecAtNs != 0 {
		t.Fatalf("empty launch wrote %+v", o2.log.data)
	}
}

// readPhases reads the phases.json the observer wrote in dir.
func readPhases(t *testing.T, dir string) Phases {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, PhasesFile))
	if err != nil {
		t.Fatal(err)
	}
	var p Phases
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p
}
