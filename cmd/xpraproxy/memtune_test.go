package main

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

	now := time.Now()
	m := &memTuner{burst: 150}
	m.tuneGC(0, false, now)
	if got := current(); got != 25 {
		t.Fatalf("no handshakes: target %d, want 25", got)
	}
	m.tuneGC(3, false, now)
	if got := current(); got != 150 {
		t.Fatalf("during a burst: target %d, want 150", got)
	}
	m.tuneGC(3, false, now.Add(500*time.Millisecond)) // quiet, but for less than a second
	if got := current(); got != 150 {
		t.Fatalf("right after the burst: target %d, want 150", got)
	}
	m.tuneGC(3, false, now.Add(2*time.Second))
	if got := current(); got != 25 {
		t.Fatalf("after the burst: target %d, want 25 back", got)
	}
	m.tuneGC(3, true, now.Add(3*time.Second)) // a job still running counts
	if got := current(); got != 150 {
		t.Fatalf("a running job: target %d, want 150", got)
	}
	m.tuneGC(3, false, now.Add(5*time.Second))

	debug.SetGCPercent(300)
	m.tuneGC(4, false, now.Add(6*time.Second))
	if got := current(); got != 300 {
		t.Fatalf("steady target above the burst one: %d, want 300 kept", got)
	}
	off := &memTuner{}
	off.tuneGC(1, true, now)
	if got := current(); got != 300 {
		t.Fatalf("without a burst target: %d, want 300 kept", got)
	}
}

// Memory goes back to the OS once a burst is over, at most every 10 s.
func TestMemoryRelease(t *testing.T) {
	now := time.Now()
	m := &memTuner{}
	m.release(5, true, now)
	if m.released != 0 {
		t.Fatal("released while logins run")
	}
	m.release(5, false, now)
	if m.released != 5 {
		t.Fatal("not released after a burst")
	}
	m.release(9, false, now.Add(time.Second))
	if m.released != 5 {
		t.Fatal("released twice within 10 s")
	}
	m.release(9, false, now.Add(11*time.Second))
	if m.released != 9 {
		t.Fatal("not released after 10 s")
	}
}

// Drained buffers go back to the OS after a peak of at least
// bufferRelease, once under a quarter of it, at most every 10 s.
func TestBufferRelease(t *testing.T) {
	now := time.Now()
	m := &memTuner{}
	m.releaseBuffers(bufferRelease/2, now)
	m.releaseBuffers(0, now)
	if !m.releasedAt.IsZero() {
		t.Fatal("released after a small peak")
	}
	m.releaseBuffers(2*bufferRelease, now)
	m.releaseBuffers(bufferRelease, now)
	if !m.releasedAt.IsZero() {
		t.Fatal("released while half the peak is still held")
	}
	m.releaseBuffers(bufferRelease/4, now)
	if !m.releasedAt.Equal(now) || m.peak != 0 {
		t.Fatal("not released once the buffers drained")
	}
	m.releaseBuffers(4*bufferRelease, now.Add(time.Second))
	m.releaseBuffers(0, now.Add(2*time.Second))
	if !m.releasedAt.Equal(now) {
		t.Fatal("released twice within 10 s")
	}
	m.releaseBuffers(0, now.Add(11*time.Second))
	if !m.releasedAt.Equal(now.Add(11 * time.Second)) {
		t.Fatal("not released after 10 s")
	}
}
