package bench

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// startTree starts `sh -c script` in a process group of its own and ends
// the whole group when the test does.
func startTree(t *testing.T, script string) int {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return cmd.Process.Pid
}

// waitTree reads the tree until its processes are counted as want.
func waitTree(t *testing.T, pid int, want string) treeStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tr := readTree(pid, true)
		if tr.Counted() == want {
			return tr
		}
		if time.Now().After(deadline) {
			t.Fatalf("tree of %d: %q, want %q: %+v", pid, tr.Counted(), want, tr.Procs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadTreeSumsDescendants: a shell with a child, a grandchild and
// another child (as a supervisor with workers, or xpra's forks) is read
// as four processes, named in the "counted" summary, whose RSS and PSS
// are the tree's sums, the root first.
func TestReadTreeSumsDescendants(t *testing.T) {
	// "; :" keeps each shell from exec'ing its last command.
	pid := startTree(t, "(sleep 30; :) & sleep 30 & wait; :")
	tr := waitTree(t, pid, "2 sh + 2 sleep")
	if tr.Procs[0].PID != pid {
		t.Errorf("first process %d, want the root %d", tr.Procs[0].PID, pid)
	}
	var rss, pss int64
	for _, p := range tr.Procs {
		if p.RSS <= 0 {
			t.Errorf("process %d (%s): no RSS", p.PID, p.Name)
		}
		rss += p.RSS
		pss += p.PSS
	}
	if tr.RSS != rss || tr.PSS != pss {
		t.Errorf("tree RSS %d PSS %d, processes sum to %d and %d", tr.RSS, tr.PSS, rss, pss)
	}
	if tr.PSS <= 0 || tr.PSS > tr.RSS {
		// Four processes sharing sh's and sleep's pages: their PSS sum is
		// less than their RSS sum (the kernel may round each up a page).
		t.Errorf("tree PSS %d, RSS %d", tr.PSS, tr.RSS)
	}
	// The plain reading (the soak's sampling) skips smaps_rollup.
	if rss, _ := procStats(pid); rss <= 0 {
		t.Errorf("procStats: RSS %d", rss)
	}
	if tr := readTree(pid, false); tr.PSS != 0 || len(tr.Procs) != 4 {
		t.Errorf("without pss: %+v", tr)
	}
}

// TestReadTreeCountsReapedChildren: CPU spent by a child that has exited
// and been reaped (a worker that ended during the run) stays in the
// tree's CPU time, through its parent's cutime and cstime.
func TestReadTreeCountsReapedChildren(t *testing.T) {
	pid := startTree(t, "(i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done) & wait; sleep 30; :")
	tr := waitTree(t, pid, "1 sh + 1 sleep") // the busy child is gone
	if tr.CPU < 50*time.Millisecond {
		t.Errorf("tree CPU %v after a busy child was reaped", tr.CPU)
	}
}

// TestReadTreeGone: a pid that is no process reads as nothing.
func TestReadTreeGone(t *testing.T) {
	if tr := readTree(0, true); tr.RSS != 0 || len(tr.Procs) != 0 {
		t.Errorf("pid 0: %+v", tr)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if tr := readTree(cmd.Process.Pid, true); len(tr.Procs) != 0 || tr.CPU != 0 {
		t.Errorf("exited pid: %+v", tr)
	}
}
