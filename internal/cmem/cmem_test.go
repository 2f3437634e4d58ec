package cmem

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func rssKB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Memory that C code freed goes back to the system with Trim, as the
// sqlite page caches of a login burst must.
func TestTrimReturnsFreedCMemory(t *testing.T) {
	// 64 MiB in blocks below the mmap threshold, all freed but the last,
	// so that trimming must release pages below the top of the heap.
	release := churn(4096, 16<<10)
	defer release()
	before := rssKB(t)
	Trim()
	after := rssKB(t)
	if before-after < 32<<10 {
		t.Errorf("Trim released %d KB of 64 MB freed (RSS %d → %d KB)", before-after, before, after)
	}
}
