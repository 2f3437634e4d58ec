package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/xpraproxy/xpraproxy/internal/dbtest"
	"github.com/xpraproxy/xpraproxy/internal/disconnect"
)

// fakeInstance is an instance's relaying sessions, as its loops would
// list them.
type fakeInstance struct {
	mu      sync.Mutex
	recs    map[uint64]Record
	stopped []uint64
}

func (f *fakeInstance) records() ([]Record, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Record
	for _, r := range f.recs {
		out = append(out, r)
	}
	return out, true
}

func (f *fakeInstance) add(r Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Started, r.Active = time.Now(), time.Now()
	f.recs[r.ID] = r
}

func (f *fakeInstance) stop(id uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.recs[id]
	delete(f.recs, id)
	f.stopped = append(f.stopped, id)
	return ok
}

func open(t *testing.T, uri, name string, maxUser int) (*Registry, *fakeInstance) {
	t.Helper()
	f := &fakeInstance{recs: map[uint64]Record{}}
	r, err := Open(Config{URI: uri, Name: name, Address: name + ":14500", Interval: 200 * time.Millisecond, Expiry: 2 * time.Second,
		ActivityEvery: time.Millisecond, MaxUserSessions: maxUser, Records: f.records, Stop: f.stop,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, f
}

func flush(t *testing.T, rs ...*Registry) {
	t.Helper()
	for _, r := range rs {
		if err := r.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFleet(t *testing.T) {
	pg := dbtest.Postgres(t)
	a, fa := open(t, pg.URI, "host/127.0.0.2:14500", 2)
	b, fb := open(t, pg.URI, "host/127.0.0.3:14500", 2)
	fa.add(Record{ID: 1, User: "alice", Display: "tcp://h:1/", Pool: "farm", Client: "10.0.0.1", Bytes: 10})
	fb.add(Record{ID: 1, User: "bob", Display: "tcp://h:2/", Pool: "farm", Client: "10.0.0.2"})
	fb.add(Record{ID: 2, User: "bob", Display: ":10"})
	flush(t, a, b, a)

	// Fleet-wide counts leave out the instance's own sessions (it counts
	// those live); affinity names the member of the user's last session.
	if c := a.Counts("farm"); len(c) != 1 || c["tcp://h:2/"] != 1 {
		t.Errorf("a sees %v", c)
	}
	if c := b.Counts("farm"); len(c) != 1 || c["tcp://h:1/"] != 1 {
		t.Errorf("b sees %v", c)
	}
	if m := b.Affinity("alice", "farm"); m != "tcp://h:1/" {
		t.Errorf("alice's affinity: %q", m)
	}
	if m := b.Affinity("carol", "farm"); m != "" {
		t.Errorf("carol has an affinity: %q", m)
	}
	if in := a.Instances(); len(in) != 2 || in[0].Sessions+in[1].Sessions != 3 {
		t.Errorf("instances: %+v", in)
	}
	all, err := Sessions(context.Background(), pg.URI, 2*time.Second)
	if err != nil || len(all) != 3 || all[0].Name() != "host/127.0.0.2:14500/1" || all[0].Bytes != 10 {
		t.Errorf("sessions: %+v %v", all, err)
	}

	// Per-user limit across instances: bob has 2 on b; a refuses a third.
	err = a.Reserve("bob", 5, "")
	var de *disconnect.Error
	if !errors.As(err, &de) || de.Message != "too many sessions: 2 running, the limit is 2" {
		t.Errorf("third session of bob: %v", err)
	}
	// Racing reservations on two instances: exactly the limit wins.
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := a
			if i%2 == 1 {
				r = b
			}
			if r.Reserve("dave", uint64(100+i), "") == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 2 {
		t.Errorf("%d of dave's racing sessions were admitted, limit 2", ok.Load())
	}
	// A released place is free again after the flush.
	for i := range 8 {
		a.Release(uint64(100 + i))
		b.Release(uint64(100 + i))
	}
	flush(t, a, b)
	if err := a.Reserve("dave", 200, ""); err != nil {
		t.Errorf("after release: %v", err)
	}

	// Stop through the registry reaches the owning instance.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	time.Sleep(500 * time.Millisecond) // LISTEN
	if err := Stop(context.Background(), pg.URI, "host/127.0.0.3:14500/2", 2*time.Second, 5*time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	if fb.stopped == nil || fb.stopped[0] != 2 {
		t.Errorf("b stopped %v", fb.stopped)
	}
	if err := Stop(context.Background(), pg.URI, "host/127.0.0.3:14500/99", 2*time.Second, time.Second); !errors.Is(err, ErrNoSession) {
		t.Errorf("stopping a missing session: %v", err)
	}

	// An instance that stops flushing expires with its sessions.
	time.Sleep(2500 * time.Millisecond)
	all, _ = Sessions(context.Background(), pg.URI, 2*time.Second)
	for _, s := range all {
		if s.Instance == a.Name() {
			t.Errorf("a's session outlived a: %+v", s)
		}
	}
	if c := b.Counts("farm"); len(c) != 0 {
		t.Errorf("b still counts a's sessions: %v", c)
	}

	// The database goes away: flushes fail, then resync when it is back.
	pg.Stop()
	fa.add(Record{ID: 3, User: "erin", Display: ":11"})
	if err := a.Flush(context.Background()); err == nil {
		t.Error("a flush without a database succeeded")
	}
	a.mu.Lock()
	a.resync = true // as Run's failed flush leaves it
	a.mu.Unlock()
	pg.Start()
	deadline := time.Now().Add(15 * time.Second)
	for a.Flush(context.Background()) != nil && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	all, err = Sessions(context.Background(), pg.URI, 2*time.Second)
	n := 0
	for _, s := range all {
		if s.Instance == a.Name() {
			n++
		}
	}
	if err != nil || n != 3 { // 1, 3 and dave's reservation
		t.Errorf("after the database came back a has %d rows: %v %v", n, all, err)
	}
}

// Writes per flush do not grow with idle sessions: 9,000 sessions take one
// transaction to register, and idle flushes write only the heartbeat.
func TestFlushCost(t *testing.T) {
	pg := dbtest.Postgres(t)
	r, f := open(t, pg.URI, "big", 0)
	r.cfg.ActivityEvery = time.Hour
	for i := range 9000 {
		f.add(Record{ID: uint64(i + 1), User: fmt.Sprintf("u%d", i), Display: "tcp://h:1/", Pool: "farm"})
	}
	commits := func() int64 {
		conn, err := pgx.Connect(context.Background(), pg.URI)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var n int64
		conn.QueryRow(context.Background(), "SELECT xact_commit FROM pg_stat_database WHERE datname = 'xpra'").Scan(&n)
		return n
	}
	flush(t, r)
	time.Sleep(700 * time.Millisecond) // pg_stat_database lags
	before := commits()
	start := time.Now()
	for range 10 {
		flush(t, r)
	}
	took := time.Since(start)
	time.Sleep(700 * time.Millisecond)
	// 10 flushes and the counting queries, with room for a lagging
	// statistics flush on a loaded machine (13 once); a flush of rows one
	// by one would be thousands.
	if d := commits() - before; d > 16 {
		t.Errorf("10 idle flushes of 9,000 sessions took %d transactions", d)
	}
	all, _ := Sessions(context.Background(), pg.URI, time.Minute)
	if len(all) != 9000 {
		t.Errorf("%d rows for 9,000 sessions", len(all))
	}
	t.Logf("idle flush of 9,000 sessions: %v each", took/10)
}

func TestLocalLimit(t *testing.T) {
	l := &Local{Max: 2}
	if l.Reserve("a", 1, "") != nil || l.Reserve("a", 2, "") != nil || l.Reserve("b", 3, "") != nil {
		t.Fatal("under the limit refused")
	}
	if err := l.Reserve("a", 4, ""); err == nil {
		t.Error("a third session admitted")
	}
	l.Release(1)
	l.Release(1)
	if err := l.Reserve("a", 5, ""); err != nil {
		t.Errorf("after release: %v", err)
	}
}
