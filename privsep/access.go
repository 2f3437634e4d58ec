package privsep

// Access records (docs/accesslog.md) on a root proxy: the workers make
// them and the main process writes them in its log; it makes the ones of
// the sessions lost with a worker itself.

import (
	"time"

	"github.com/xpraproxy/xpraproxy/relay"
)

// lostSession is what the access record of a session lost with its
// worker can say: who, from where, since when.
type lostSession struct {
	user, peer, transport string
	link                  relay.Link
	started               time.Time
}

// access writes an access record in the proxy's log: Log's handler makes
// it a text or JSON line, or a journal entry (cmd/xpraproxy/accesslog.go).
// From a worker's reading goroutine.
func (s *Supervisor) access(r relay.AccessRecord) { r.Log(s.Log) }

// record is the access record of a session lost with its worker.
func (l lostSession) record(id uint64) relay.AccessRecord {
	h := relay.Handoff{ID: id, User: l.user, Peer: l.peer, Transport: l.transport, Link: l.link, Started: l.started}
	r := h.AccessRecord(time.Now(), relay.CloseInternal, "the proxy instance (worker) relaying it died")
	r.Phase = relay.PhaseRelay // or still connecting: the worker's record would have said
	return r
}
