package main

import (
	"runtime/debug"
	"time"

	"github.com/xpraproxy/xpraproxy/internal/cmem"
)

// The process's memory tuning: the GC target and giving memory back to
// the OS are process-wide, so the program owns them, not the reactor
// (which only reports how busy logins keep it: loop.Server.Activity). The
// main process and every worker run one tuner each.

// activity is what the tuner reads: loop.Server.Activity and Buffered.
type activity interface {
	Activity() (handshakes int64, busy bool)
	Buffered() int64
}

// memTuner raises the GC target while handshakes run and restores it a
// second after the last one (burstGC), and returns the memory of a burst
// of handshakes (decoded hellos, sqlite lookups, worker stacks) to the OS
// once it is over, Go's heap and the C heap (sqlite's page caches) alike,
// at most every 10 s: the density of idle sessions is the proxy's point.
// Its fields are the tuner goroutine's alone.
type memTuner struct {
	src   activity
	burst int // GC target during a burst; 0: unchanged

	seen     int64 // handshakes at the last tick
	lastBusy time.Time
	inBurst  bool
	steady   int // the target to come back to

	released   int64 // handshakes at the last release
	releasedAt time.Time
	peak       int64 // the most the sessions' buffers held since the last release
}

// tuneEvery is how often the tuner looks.
const tuneEvery = 100 * time.Millisecond

// runMemTuner tunes until stop is closed.
func runMemTuner(src activity, burstGCPercent int, stop <-chan struct{}) {
	t := &memTuner{src: src, burst: burstGCPercent}
	tick := time.NewTicker(tuneEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			done, busy := src.Activity()
			t.tuneGC(done, busy, now)
			t.release(done, busy, now)
			t.releaseBuffers(src.Buffered(), now)
		}
	}
}

// tuneGC: the GC target while logins run. A burst of handshakes
// allocates decoded hellos (a 3.1 client's is 67 KB that decodes to
// thousands of values) that are garbage a moment later, and the steady
// target tuned for idle density makes the collector run after every few of
// them. 0, or a steady target at or above the burst one: unchanged.
func (t *memTuner) tuneGC(done int64, busy bool, now time.Time) {
	if t.burst <= 0 {
		return
	}
	busy = busy || done != t.seen
	t.seen = done
	switch {
	case busy:
		t.lastBusy = now
		if !t.inBurst {
			prev := debug.SetGCPercent(t.burst)
			if prev < 0 || prev >= t.burst {
				debug.SetGCPercent(prev) // off, or already at least that
				return
			}
			t.steady, t.inBurst = prev, true
		}
	case t.inBurst && now.Sub(t.lastBusy) > time.Second:
		debug.SetGCPercent(t.steady)
		t.inBurst = false
	}
}

// release gives memory back once a burst is over.
func (t *memTuner) release(done int64, busy bool, now time.Time) {
	if done == t.released || busy || now.Sub(t.releasedAt) < 10*time.Second {
		return
	}
	t.released, t.releasedAt = done, now
	debug.FreeOSMemory()
	cmem.Trim()
}

// bufferRelease is the buffer peak after which drained buffers are given
// back: slow readers, floods and sheds leave freed pages behind that the
// steady GC target would keep for the next peak.
const bufferRelease = 32 << 20

// releaseBuffers gives the memory of the sessions' buffers back once they
// have drained to under a quarter of a peak of at least bufferRelease, at
// most every 10 s (with the burst release).
func (t *memTuner) releaseBuffers(buffered int64, now time.Time) {
	t.peak = max(t.peak, buffered)
	if t.peak < bufferRelease || buffered > t.peak/4 || now.Sub(t.releasedAt) < 10*time.Second {
		return
	}
	t.peak, t.releasedAt = 0, now
	debug.FreeOSMemory()
	cmem.Trim()
}
