//go:build integration

package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mem is a process's resident and proportional set size in KiB, from
// /proc/<pid>/smaps_rollup. PSS splits shared pages (the binary's text,
// shared libraries) between the processes mapping them, so it is the
// fair per-pod figure when several shims run the same binary.
type Mem struct {
	RSSKiB float64 `json:"rss_kib"`
	PSSKiB float64 `json:"pss_kib"`
	// AnonKiB is the private, anonymous part (heap, stacks, guest RAM of
	// a private backend): what each further pod costs, whatever is shared.
	AnonKiB float64 `json:"anon_kib"`
}

// Add returns the sum of m and o.
func (m Mem) Add(o Mem) Mem {
	return Mem{RSSKiB: m.RSSKiB + o.RSSKiB, PSSKiB: m.PSSKiB + o.PSSKiB, AnonKiB: m.AnonKiB + o.AnonKiB}
}

// ReadMem reads pid's smaps_rollup.
func ReadMem(pid int) (Mem, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		m.addField(strings.Fields(sc.Text()))
	}
	return m, sc.Err()
}

// addField adds an smaps line's Rss, Pss or Anonymous (kB) to m.
func (m *Mem) addField(f []string) {
	if len(f) < 2 {
		return
	}
	v, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return
	}
	switch f[0] {
	case "Rss:":
		m.RSSKiB += v
	case "Pss:":
		m.PSSKiB += v
	case "Anonymous:":
		m.AnonKiB += v
	}
}

// FindProcs returns the pids whose argv matches: argv[0]'s base name is
// exe and some argument equals (or, with contains, contains) arg.
func FindProcs(exe, arg string, contains bool) []int {
	return procs("cmdline", func(raw []byte) bool {
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(raw) == 0 || filepath.Base(argv[0]) != exe {
			return false
		}
		for _, a := range argv[1:] {
			if a == arg || contains && strings.Contains(a, arg) {
				return true
			}
		}
		return false
	})
}

// procs returns the pids whose /proc/<pid>/<file> matches.
func procs(file string, match func([]byte) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), file)); err == nil && match(raw) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// SumMem adds up the memory of pids; unreadable ones (gone) count zero.
func SumMem(pids []int) Mem {
	var total Mem
	for _, p := range pids {
		if m, err := ReadMem(p); err == nil {
			total = total.Add(m)
		}
	}
	return total
}

// Children returns the pids of ppid's children whose command (comm) is
// name, e.g. the pause process the runc shim keeps for a pod.
func Children(ppid int, name string) []int {
	return procs("stat", func(raw []byte) bool {
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		open, close := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
		if open < 0 || close < open || string(raw[open+1:close]) != name {
			return false
		}
		f := strings.Fields(string(raw[close+1:]))
		return len(f) >= 2 && f[1] == strconv.Itoa(ppid)
	})
}

// HostMem is what one pod costs the host in processes of its own besides
// the workload: for coco the shim and vhost-device-vsock (QEMU is the
// pod's VM, reported apart), for runc the shim and its pause process.
//
// Whoever serves the vsock device (the shim, or vhost-device-vsock) maps
// the guest's memory to reach the vrings; on 2 MiB pages one touched byte
// maps a whole page, whose PSS it then shares with QEMU. That memory is the
// guest's, not the process's: mappings of the files backing QEMU's memory
// (vmPID's) are left out of shim and helpers and returned as guestShared,
// for the caller to count with the VM.
func HostMem(coco bool, podID, vmStateDir string, vmPID int) (shim, helpers, guestShared Mem) {
	if coco {
		ram := guestRAMFiles(vmPID)
		split := func(pids []int) (own Mem) {
			for _, p := range pids {
				o, guest, err := readMemSplit(p, ram)
				if err == nil {
					own, guestShared = own.Add(o), guestShared.Add(guest)
				}
			}
			return own
		}
		shim = split(FindProcs("containerd-shim-coco-v2", podID, false))
		if vmStateDir != "" {
			helpers = split(FindProcs("vhost-device-vsock", vmStateDir, true))
		}
		return shim, helpers, guestShared
	}
	pids := FindProcs("containerd-shim-runc-v2", podID, false)
	shim = SumMem(pids)
	for _, p := range pids {
		helpers = helpers.Add(SumMem(Children(p, "pause")))
	}
	return shim, helpers, Mem{}
}

// guestRAMFiles returns the "major:minor inode" of the shared file
// mappings of at least 64 MiB in pid: QEMU's guest memory (the smallest
// guest has 128 MiB), whatever backs it.
func guestRAMFiles(pid int) map[string]bool {
	files := map[string]bool{}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return files
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || !strings.HasSuffix(f[1], "s") || f[4] == "0" {
			continue
		}
		var lo, hi uint64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &lo, &hi); err == nil && hi-lo >= 64<<20 {
			files[f[3]+" "+f[4]] = true
		}
	}
	return files
}

// readMemSplit sums pid's smaps into the mappings of files in skip and the
// rest.
func readMemSplit(pid int, skip map[string]bool) (rest, skipped Mem, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return rest, skipped, err
	}
	cur := &rest
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			cur = &rest
			if skip[f[3]+" "+f[4]] {
				cur = &skipped
			}
			continue
		}
		cur.addField(f)
	}
	return rest, skipped, nil
}
