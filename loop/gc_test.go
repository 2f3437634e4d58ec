package loop

import (
	"runtime/debug"
	"testing"
	"time"
)

// The GC target rises while handshakes finish and comes back a second
// after the last one; a steady target above the burst one is left alone.
func TestBurstGCPercent(t *testing.T) {
	prev := debug.SetGCPercent(25)
	defer debug.SetGCPercent(prev)
	current := func() int { p := debug.SetGCPercent(-1); debug.SetGCPercent(p); return p }

	s := New(nil, Options{BurstGCPercent: 150})
	s.tuneGC()
	if got := current(); got != 25 {
		t.Fatalf("no handshakes: target %d, want 25", got)
	}
	s.handshakes.Add(3)
	s.tuneGC()
	if got := current(); got != 150 {
		t.Fatalf("during a burst: target %d, want 150", got)
	}
	s.tuneGC() // quiet, but for less than a second
	if got := current(); got != 150 {
		t.Fatalf("right after the burst: target %d, want 150", got)
	}
	s.gc.lastBusy = time.Now().Add(-2 * time.Second)
	s.tuneGC()
	if got := current(); got != 25 {
		t.Fatalf("after the burst: target %d, want 25 back", got)
	}

	debug.SetGCPercent(300)
	s.handshakes.Add(1)
	s.tuneGC()
	if got := current(); got != 300 {
		t.Fatalf("steady target above the burst one: %d, want 300 kept", got)
	}
	off := New(nil, Options{})
	off.handshakes.Add(1)
	off.tuneGC()
	if got := current(); got != 300 {
		t.Fatalf("without a burst target: %d, want 300 kept", got)
	}
}
