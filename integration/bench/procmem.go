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
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Rss:":
			m.RSSKiB = v
		case "Pss:":
			m.PSSKiB = v
		case "Anonymous:":
			m.AnonKiB = v
		}
	}
	return m, sc.Err()
}

// FindProcs returns the pids whose argv matches: argv[0]'s base name is
// exe and some argument equals (or, with contains, contains) arg.
func FindProcs(exe, arg string, contains bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(argv[0]) != exe {
			continue
		}
		for _, a := range argv[1:] {
			if a == arg || contains && strings.Contains(a, arg) {
				pids = append(pids, pid)
				break
			}
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
