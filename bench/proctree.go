package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// treeStats is one reading of a proxy under test: the process the bench
// started and every descendant alive at that moment (xpraproxy as root
// hands connections to `xpraproxy worker` children; xpra's proxy forks an
// instance per connection), summed.
type treeStats struct {
	RSS int64 // sum of VmRSS, bytes: shared pages counted once per process
	// PSS is the sum of Pss from smaps_rollup, bytes: each shared page
	// divided among the processes that map it, so a page shared by the
	// supervisor and its workers counts once in the sum (0 when the
	// kernel has no smaps_rollup).
	PSS int64
	// CPU is user+system time of the live processes and of the children
	// they have reaped (cutime, cstime): a worker that exited during the
	// run still counts.
	CPU   time.Duration
	Procs []procInfo
}

// procInfo is one process of a tree.
type procInfo struct {
	PID  int
	Name string // "xpraproxy worker", "haproxy" (see procName)
	RSS  int64
	PSS  int64
}

// Counted says which processes the figures sum, as "1 xpraproxy proxy +
// 2 xpraproxy worker": names in first-seen order (the root first).
func (t treeStats) Counted() string {
	var names []string
	count := map[string]int{}
	for _, p := range t.Procs {
		if count[p.Name] == 0 {
			names = append(names, p.Name)
		}
		count[p.Name]++
	}
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%d %s", count[n], n)
	}
	return strings.Join(parts, " + ")
}

// procStats sums RSS (bytes) and CPU time over pid and its descendants.
func procStats(pid int) (rss int64, cpu time.Duration) {
	t := readTree(pid, false)
	return t.RSS, t.CPU
}

// readTree reads pid and its descendants from /proc; pss also reads each
// process's smaps_rollup (a walk of its mappings: cheap for a few
// processes, so it is done at the measurement points only).
func readTree(pid int, pss bool) treeStats {
	var t treeStats
	if pid <= 0 {
		return t
	}
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(n); len(f) > 1 {
			pp, _ := strconv.Atoi(f[1])
			children[pp] = append(children[pp], n)
		}
	}
	tick := time.Second / 100 // USER_HZ
	var walk func(int)
	walk = func(p int) {
		f := statFields(p)
		if len(f) < 15 {
			return // gone since the scan
		}
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseInt(f[i], 10, 64)
			t.CPU += time.Duration(v) * tick
		}
		info := procInfo{PID: p, Name: procName(p), RSS: procKB(fmt.Sprintf("/proc/%d/status", p), "VmRSS:")}
		if pss {
			info.PSS = procKB(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss:")
		}
		t.RSS += info.RSS
		t.PSS += info.PSS
		t.Procs = append(t.Procs, info)
		kids := children[p]
		slices.Sort(kids)
		for _, c := range kids {
			walk(c)
		}
	}
	walk(pid)
	return t
}

// statFields is /proc/PID/stat after the command name: field 0 is the
// state, 1 the parent, 11..14 utime, stime, cutime, cstime (proc(5)
// numbering minus 3).
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return nil
	}
	return strings.Fields(string(b[i+2:]))
}

// procKB reads a "Key:   N kB" line of a /proc file, in bytes.
func procKB(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, key) {
			if f := strings.Fields(line); len(f) > 1 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// procName names a process for the "counted" column: its command name,
// and its first argument when that is a word (a subcommand such as
// xpraproxy's proxy and worker; not an option, a path or a number).
func procName(pid int) string {
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	name := strings.TrimSpace(string(comm))
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) > 0 && filepath.Base(args[0]) != "" && name == "" {
		name = filepath.Base(args[0])
	}
	if len(args) > 1 && args[1] != "" && unicode.IsLetter(rune(args[1][0])) && !strings.ContainsAny(args[1], "/:=.") {
		name += " " + args[1]
	}
	if name == "" {
		name = "?"
	}
	return name
}
