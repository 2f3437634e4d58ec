// Package registry keeps a fleet of xpraproxy instances in one PostgreSQL
// database (docs/fleet.md): each instance registers itself and its
// relaying sessions, batched off the relay path, and reads back what
// routing needs from the others: sessions per pool member (fleet-wide
// least-sessions), users' last pool member (affinity), and a per-user
// limit that holds across instances. Local is the same limit for one
// instance without a database.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/xpraproxy/xpraproxy/internal/disconnect"
)

// Record is what the registry keeps of one relaying session: no secrets
// (the display is redacted), small enough to snapshot thousands every
// few seconds. It is the registry's own type, not relay.Record, so that
// registry/ depends on no session code; it has relay.Record's fields, so
// cmd/ converts one to the other with Record(r).
type Record struct {
	ID      uint64
	User    string
	Display string // redacted
	Pool    string // the pool it came from, "" for none
	Client  string // the client's address
	Started time.Time
	Active  time.Time // last traffic
	Bytes   int64     // both directions
}

// Config says which instance this is and how it writes.
type Config struct {
	// URI is the PostgreSQL database (postgresql://user:pass@host/db).
	URI string
	// Name identifies the instance (unique in the fleet); Address is how
	// operators reach it (its first listener).
	Name, Address string
	// Interval between flushes (default 2 s): heartbeat, session rows,
	// and the reads of the fleet's counts. Expiry: an instance whose
	// heartbeat is older is gone (default 15 s).
	Interval, Expiry time.Duration
	// ActivityEvery bounds how often one session's byte count and last
	// activity are written (default 10 s).
	ActivityEvery time.Duration
	// MaxUserSessions is --max-user-sessions across the fleet (0: none).
	MaxUserSessions int
	// Records lists the instance's relaying sessions; complete is false
	// when the list may be missing some.
	Records func() (recs []Record, complete bool)
	// Stop ends one of this instance's sessions (xpraproxy stop through
	// the registry); false when there is no such session.
	Stop func(id uint64) bool
	Log  *slog.Logger
}

// Instance is one live instance as the registry knows it.
type Instance struct {
	Name, Address      string
	Started, Heartbeat time.Time
	Sessions           int
}

type written struct {
	bytes    int64
	at       time.Time
	reserved time.Time // non-zero: a reservation not relaying yet
	user     string    // of a reservation, to write it again after an outage
	display  string
}

// Registry is this instance's link to the fleet.
type Registry struct {
	cfg     Config
	pool    *pgxpool.Pool
	started time.Time

	mu        sync.Mutex
	known     map[uint64]written // rows this instance has in the database
	released  []uint64           // reservations to delete
	counts    map[string]map[string]int
	instances []Instance
	resync    bool // the rows may differ from known: rewrite them
	healthy   bool
	lastWarn  time.Time
}

// reserveTTL is how long a reservation may wait for its session to relay
// (dial, login, a started session) before the flush drops it.
const reserveTTL = 2 * time.Minute

// Open connects lazily (the first flush or query connects): an instance
// starts while the database is down and registers when it comes back.
func Open(cfg Config) (*Registry, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = 15 * time.Second
	}
	if cfg.ActivityEvery <= 0 {
		cfg.ActivityEvery = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	pc, err := pgxpool.ParseConfig(cfg.URI)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	pc.MaxConns = 4
	pc.ConnConfig.ConnectTimeout = 3 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return &Registry{cfg: cfg, pool: pool, started: time.Now(), known: map[uint64]written{}, resync: true}, nil
}

// Close releases the database connections; the instance's rows expire.
func (r *Registry) Close() { r.pool.Close() }

// Name is the instance's name in the fleet.
func (r *Registry) Name() string { return r.cfg.Name }

// Run flushes every interval and serves stop requests until ctx ends.
func (r *Registry) Run(ctx context.Context) {
	go r.listen(ctx)
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		fctx, cancel := context.WithTimeout(ctx, r.cfg.Interval*2)
		err := r.Flush(fctx)
		cancel()
		r.health(err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// health logs a failing database once per 30 s, and its recovery.
func (r *Registry) health(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err == nil && !r.healthy:
		r.healthy = true
		r.cfg.Log.Info("session registry connected", "instance", r.cfg.Name)
	case err != nil && (r.healthy || time.Since(r.lastWarn) > 30*time.Second):
		r.healthy = false
		r.lastWarn = time.Now()
		r.cfg.Log.Warn("session registry unavailable: sessions keep relaying; retrying", "err", err)
	}
}

// ensureSchema creates the tables once per instance start.
func (r *Registry) ensureSchema(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLock); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, schema)
	return err
}

// Flush writes the instance's heartbeat and what changed in its sessions,
// and reads the fleet's counts: one transaction, one batch.
func (r *Registry) Flush(ctx context.Context) error {
	recs, complete := r.cfg.Records()
	now := time.Now()
	r.mu.Lock()
	resync := r.resync
	current := make(map[uint64]bool, len(recs))
	var up []Record
	var affinity []Record
	for _, rec := range recs {
		current[rec.ID] = true
		w, ok := r.known[rec.ID]
		if !ok || !w.reserved.IsZero() || resync || (rec.Bytes != w.bytes && now.Sub(w.at) >= r.cfg.ActivityEvery) {
			up = append(up, rec)
		}
		if (!ok || !w.reserved.IsZero()) && rec.Pool != "" {
			affinity = append(affinity, rec)
		}
	}
	var gone, keep []uint64
	for id, w := range r.known {
		switch {
		case current[id]:
			keep = append(keep, id)
		case !w.reserved.IsZero() && now.Sub(w.reserved) < reserveTTL:
			keep = append(keep, id)
			if resync {
				up = append(up, Record{ID: id, User: w.user, Display: w.display, Started: w.reserved, Active: w.reserved})
			}
		case complete:
			gone = append(gone, id)
		default:
			keep = append(keep, id)
		}
	}
	gone = append(gone, r.released...)
	released := len(r.released)
	r.mu.Unlock()

	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback(ctx)
	if resync {
		if err := r.ensureSchema(ctx, tx); err != nil {
			return fmt.Errorf("registry: schema: %w", err)
		}
	}
	b := &pgx.Batch{}
	b.Queue(upsertInstance, r.cfg.Name, r.cfg.Address, r.started)
	if resync {
		b.Queue(resyncSessions, r.cfg.Name, keep)
	}
	if len(up) > 0 {
		n := len(up)
		ids, users, displays, pools, clients := make([]int64, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		starts, actives, bytes := make([]time.Time, n), make([]time.Time, n), make([]int64, n)
		for i, rec := range up {
			ids[i], users[i], displays[i], pools[i], clients[i] = int64(rec.ID), rec.User, rec.Display, rec.Pool, rec.Client
			starts[i], actives[i], bytes[i] = rec.Started, rec.Active, rec.Bytes
		}
		b.Queue(upsertSessions, r.cfg.Name, ids, users, displays, pools, clients, starts, bytes, actives)
	}
	if len(affinity) > 0 {
		users, pools, members := make([]string, len(affinity)), make([]string, len(affinity)), make([]string, len(affinity))
		for i, rec := range affinity {
			users[i], pools[i], members[i] = rec.User, rec.Pool, rec.Display
		}
		b.Queue(upsertAffinity, users, pools, members)
	}
	if len(gone) > 0 {
		b.Queue(deleteSessions, r.cfg.Name, toInt64(gone))
	}
	expiry := r.cfg.Expiry.Seconds()
	b.Queue(expireInstances, expiry)
	counts := map[string]map[string]int{}
	b.Queue(fleetCounts, r.cfg.Name, expiry).Query(func(rows pgx.Rows) error {
		var pool, display string
		var n int
		_, err := pgx.ForEachRow(rows, []any{&pool, &display, &n}, func() error {
			if counts[pool] == nil {
				counts[pool] = map[string]int{}
			}
			counts[pool][display] = n
			return nil
		})
		return err
	})
	var instances []Instance
	b.Queue(fleetInstances, expiry).Query(func(rows pgx.Rows) error {
		var in Instance
		_, err := pgx.ForEachRow(rows, []any{&in.Name, &in.Address, &in.Started, &in.Heartbeat, &in.Sessions}, func() error {
			instances = append(instances, in)
			return nil
		})
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("registry: flush: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("registry: flush: %w", err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range up {
		if w := r.known[rec.ID]; !current[rec.ID] && !w.reserved.IsZero() {
			continue // a reservation written again: still one
		}
		r.known[rec.ID] = written{bytes: rec.Bytes, at: now}
	}
	for _, id := range gone {
		delete(r.known, id)
	}
	r.released = r.released[released:]
	r.counts, r.instances, r.resync = counts, instances, false
	return nil
}

func toInt64(ids []uint64) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

// Counts are the sessions other live instances relay to each member of
// pool, as of the last flush (route.Fleet).
func (r *Registry) Counts(pool string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.counts[pool])
}

// Affinity is the member user's last session in pool went to; "" when
// none is known or the database does not answer within a second.
func (r *Registry) Affinity(user, pool string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var member string
	if err := r.pool.QueryRow(ctx, selectAffinity, user, pool).Scan(&member); err != nil {
		return ""
	}
	return member
}

// Instances are the live instances as of the last flush.
func (r *Registry) Instances() []Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Instance(nil), r.instances...)
}

// Healthy reports whether the last flush succeeded.
func (r *Registry) Healthy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.healthy
}

// Reserve takes one of user's places before session id dials (relay's
// UserLimit): under a per-user advisory lock, so that two instances
// cannot both give away the last place. A database that does not answer
// refuses the session: the limit cannot be checked.
func (r *Registry) Reserve(user string, id uint64, display string) error {
	if r.cfg.MaxUserSessions <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	n, err := r.reserve(ctx, user, id, display)
	if err != nil {
		r.cfg.Log.Warn("session registry: cannot check the user's sessions", "err", err)
		return &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error",
			Message: "the session registry is not available, try again later", Err: err}
	}
	if n >= r.cfg.MaxUserSessions {
		return &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error",
			Message: fmt.Sprintf("too many sessions: %d running, the limit is %d", n, r.cfg.MaxUserSessions)}
	}
	r.mu.Lock()
	r.known[id] = written{reserved: time.Now(), at: time.Now(), user: user, display: display}
	r.mu.Unlock()
	return nil
}

var errOver = errors.New("over the limit")

// reserve counts the user's live sessions and, below the limit, inserts
// the reservation; it returns the count before the insert.
func (r *Registry) reserve(ctx context.Context, user string, id uint64, display string) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('xpraproxy-user:' || $1))", user); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, userSessions, user, r.cfg.Expiry.Seconds()).Scan(&n); err != nil {
			return err
		}
		if n >= r.cfg.MaxUserSessions {
			return errOver
		}
		if _, err := tx.Exec(ctx, upsertInstance, r.cfg.Name, r.cfg.Address, r.started); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, insertReservation, r.cfg.Name, int64(id), user, display)
		return err
	})
	if errors.Is(err, errOver) {
		return n, nil
	}
	return n, err
}

// Release gives back session id's place: its row goes at the next flush.
func (r *Registry) Release(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.known[id]; ok && !w.reserved.IsZero() {
		delete(r.known, id)
		r.released = append(r.released, id)
	}
}
