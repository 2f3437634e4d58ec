package relay

import "time"

// Record is what a session registry keeps of one relaying session: no
// secrets (the display is redacted), small enough to snapshot thousands
// every few seconds.
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

// Record describes a relaying session; ok is false for any other state.
// It runs on the session's loop.
func (s *Session) Record() (Record, bool) {
	if s.state != stateRelay || s.c2s == nil || s.s2c == nil {
		return Record{}, false
	}
	return Record{ID: s.ID, User: s.user, Display: s.display, Pool: s.pool, Client: s.src,
		Started: s.started, Active: s.active, Bytes: s.c2s.Bytes + s.s2c.Bytes}, true
}

// UserLimit holds a per-user maximum of sessions (fleet-wide with a
// session registry). Reserve runs off the loop before a session dials and
// fails with a *disconnect.Error the client is shown; Release gives the
// place back when a session that reserved one ends.
type UserLimit interface {
	Reserve(user string, id uint64, display string) error
	Release(id uint64)
}
