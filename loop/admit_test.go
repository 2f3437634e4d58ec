package loop

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// placed is one pre-login ticket of a victim test: its source, how far
// it came, how long ago it arrived (the list is in arrival order).
type placed struct {
	src string
	st  stage
	age time.Duration
}

func fill(t *testing.T, a *admission, now time.Time, ps []placed) []*ticket {
	t.Helper()
	var ts []*ticket
	for _, p := range ps {
		tk := &ticket{src: p.src}
		tk.login.Store(true)
		a.add(tk, now.Add(-p.age))
		a.progress(tk, p.st)
		ts = append(ts, tk)
	}
	return ts
}

func TestEvictionVictim(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name     string
		placed   []placed
		newcomer string
		want     int // index in placed; -1: none (refused)
	}{
		{"least advanced first", []placed{{"10.0.0.1", stageHello, 10 * s}, {"10.0.0.2", stageBytes, 5 * s}, {"10.0.0.3", stageNew, s}}, "10.0.9.1", 2},
		{"bytes before a fresh silent one", []placed{{"10.0.0.1", stageBytes, 5 * s}, {"10.0.0.2", stageNew, 100 * time.Millisecond}}, "10.0.9.1", 0},
		{"a fresh silent one before a hello", []placed{{"10.0.0.1", stageHello, 5 * s}, {"10.0.0.2", stageNew, 100 * time.Millisecond}}, "10.0.9.1", 1},
		{"longest waiting within a stage", []placed{{"10.0.0.1", stageBytes, 3 * s}, {"10.0.0.2", stageBytes, 2 * s}, {"10.0.0.3", stageBytes, s}}, "10.0.9.1", 0},
		{"the largest /24 first", []placed{{"10.0.0.1", stageNew, 9 * s}, {"10.0.1.1", stageHello, 8 * s}, {"10.0.1.2", stageHello, 7 * s}}, "10.0.9.1", 1},
		{"ties across groups: least advanced, then oldest", []placed{{"10.0.0.1", stageHello, 9 * s}, {"10.0.1.1", stageBytes, 8 * s}, {"10.0.2.1", stageBytes, 7 * s}}, "10.0.9.1", 1},
		{"own group when among the largest", []placed{{"10.0.0.1", stageNew, 9 * s}, {"10.0.1.1", stageHello, 8 * s}}, "10.0.1.7", 1},
		{"own group smaller: the largest", []placed{{"10.0.0.1", stageHello, 9 * s}, {"10.0.0.2", stageHello, 8 * s}, {"10.0.1.1", stageNew, 7 * s}}, "10.0.1.7", 0},
		{"authenticated ones stay: a smaller group pays", []placed{{"10.0.0.1", stageAuthed, 9 * s}, {"10.0.0.2", stageAuthed, 8 * s}, {"10.0.1.1", stageHello, 7 * s}}, "10.0.9.1", 2},
		{"only authenticated ones: refused", []placed{{"10.0.0.1", stageAuthed, 9 * s}, {"10.0.1.1", stageAuthed, 8 * s}}, "10.0.9.1", -1},
		{"IPv6 /64", []placed{{"2001:db8::1", stageBytes, 9 * s}, {"2001:db8::ffff:2", stageBytes, 8 * s}, {"2001:db8:0:1::1", stageNew, 7 * s}}, "2001:db8:0:2::1", 0},
		{"IPv6 other /64s are other groups", []placed{{"2001:db8:0:1::1", stageHello, 9 * s}, {"2001:db8:0:2::1", stageNew, 8 * s}}, "2001:db8:0:3::1", 1},
		{"a mapped IPv4 address is its /24", []placed{{"::ffff:10.0.0.1", stageBytes, 9 * s}, {"10.0.0.2", stageBytes, 8 * s}, {"10.0.1.1", stageNew, 7 * s}}, "10.0.9.1", 0},
		{"unix is a group of its own", []placed{{"unix", stageBytes, 9 * s}, {"unix", stageHello, 8 * s}, {"127.0.0.1", stageNew, 7 * s}}, "127.0.1.1", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			var a admission
			ts := fill(t, &a, now, tc.placed)
			w := a.victim(prefixOf(tc.newcomer), now)
			got := -1
			for i, tk := range ts {
				if w != nil && w.t == tk {
					got = i
				}
			}
			if got != tc.want {
				t.Errorf("victim %d, want %d", got, tc.want)
			}
		})
	}
}

// bruteVictim is the policy written plainly over every ticket: what the
// heaps must find.
func bruteVictim(ts []*ticket, own prefixKey, now time.Time) *waiting {
	count := map[prefixKey]int{}
	top := 0
	for _, tk := range ts {
		count[tk.w.g.key]++
		top = max(top, count[tk.w.g.key])
	}
	for c := top; c > 0; c-- {
		oldestOf := func(in func(*waiting) bool) [evictable]*waiting {
			var o [evictable]*waiting
			for _, tk := range ts {
				w := tk.w
				if w.stage < evictable && in(w) && (o[w.stage] == nil || w.seq < o[w.stage].seq) {
					o[w.stage] = w
				}
			}
			return o
		}
		if count[own] == c {
			if w := choose(oldestOf(func(w *waiting) bool { return w.g.key == own }), now); w != nil {
				return w
			}
		}
		if w := choose(oldestOf(func(w *waiting) bool { return count[w.g.key] == c }), now); w != nil {
			return w
		}
	}
	return nil
}

// Random arrivals, progress and departures: the heaps always name the
// victim the plain policy names, and the counts add up.
func TestEvictionHeapsMatchPolicy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	srcs := []string{"10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.2.1", "10.0.2.2", "10.0.2.3", "2001:db8::1", "2001:db8::2", "2001:db8:0:1::1", "unix"}
	var a admission
	var live []*ticket
	now := time.Now()
	for i := range 4000 {
		now = now.Add(time.Duration(rng.IntN(100)) * time.Millisecond)
		switch op := rng.IntN(10); {
		case op < 4 || len(live) == 0:
			tk := &ticket{src: srcs[rng.IntN(len(srcs))]}
			a.add(tk, now)
			live = append(live, tk)
		case op < 7:
			tk := live[rng.IntN(len(live))]
			a.progress(tk, stage(rng.IntN(int(stageAuthed)+1)))
		default:
			j := rng.IntN(len(live))
			a.remove(live[j])
			a.remove(live[j]) // idempotent
			live = append(live[:j], live[j+1:]...)
		}
		if a.n != len(live) {
			t.Fatalf("step %d: %d queued, %d live", i, a.n, len(live))
		}
		own := prefixOf(srcs[rng.IntN(len(srcs))])
		if got, want := a.victim(own, now), bruteVictim(live, own, now); got != want {
			t.Fatalf("step %d: victim %+v, the policy's %+v", i, got, want)
		}
	}
}

// A full cap evicts; the evicted ticket's login place is free at once,
// and its later release counts nothing twice.
func TestEnterEvicts(t *testing.T) {
	var srv Server
	mk := func(src string) *ticket {
		tk := &ticket{srv: &srv, src: src}
		tk.login.Store(true)
		tk.open.Store(true)
		return tk
	}
	now := time.Now()
	old := mk("10.0.0.1")
	if ev, _, ok := srv.adm.enter(old, 1, now); ev != nil || !ok {
		t.Fatalf("first: %v %v", ev, ok)
	}
	nw := mk("10.0.1.1")
	ev, largest, ok := srv.adm.enter(nw, 1, now.Add(time.Second))
	if !ok || ev == nil || ev.t != old || largest.String() != "10.0.0.0/24" {
		t.Fatalf("second: %v %v %v", ev, largest, ok)
	}
	if old.login.Load() || !old.evicted || old.bind(&conn{}, nil) {
		t.Error("the evicted ticket still holds its place")
	}
	old.admitted() // nothing left to release
	if srv.adm.n != 1 || srv.adm.groups[prefixOf("10.0.0.1")] != nil {
		t.Errorf("queued %d, groups %v", srv.adm.n, srv.adm.groups)
	}
	nw.progress(stageAuthed)
	if _, _, ok := srv.adm.enter(mk("10.0.2.1"), 1, now); ok {
		t.Error("an authenticated connection was evicted")
	}
	nw.admitted()
	if srv.adm.n != 0 || stage(nw.stage.Load()) != stageDone {
		t.Errorf("after login: %d queued, stage %d", srv.adm.n, nw.stage.Load())
	}
}

func FuzzPrefix(f *testing.F) {
	for _, s := range []string{"10.1.2.3", "::1", "2001:db8::1", "fe80::1%eth0", "::ffff:1.2.3.4", "unix", "unknown", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		k := prefixOf(src)
		a, err := netip.ParseAddr(src)
		if err != nil {
			if k.p.IsValid() || k.other != src {
				t.Fatalf("%q: %+v", src, k)
			}
			return
		}
		a = a.WithZone("").Unmap()
		want := 64
		if a.Is4() {
			want = 24
		}
		if !k.p.IsValid() || k.p.Bits() != want || !k.p.Contains(a) || k.other != "" {
			t.Fatalf("%q: %+v", src, k)
		}
		if k != prefixOf(k.p.Addr().String()) {
			t.Fatalf("%q: its prefix's first address is in another group", src)
		}
	})
}
