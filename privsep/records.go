package privsep

// What the main process learns from its workers about their sessions:
// the pool members they used or found dead, and their registry records.

import (
	"sync"

	"github.com/xpraproxy/xpraproxy/relay"
	"github.com/xpraproxy/xpraproxy/route"
)

// tracked applies a worker's use or failed report to the pool the main
// process picked the session from and to the session's record. A worker
// runs as a user and speaks only for its own sessions, and only of the
// pool it was handed: a report about anything else is dropped.
func (s *Supervisor) tracked(w *worker0, m *message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.routes[m.ID]
	if !ok || r.w != w || m.Pool != r.pool {
		return
	}
	rec, recorded := s.records[m.ID]
	p := s.Pools[r.pool]
	switch m.Op {
	case "use":
		if p != nil {
			p.Use(m.ID, m.Display)
		}
		rec.Display = route.RedactDisplay(m.Display)
	case "failed":
		if p != nil {
			p.Failed(m.ID, m.Display, m.Next)
		}
		if m.Next != "" {
			rec.Display = route.RedactDisplay(m.Next)
		}
	}
	if recorded {
		s.records[m.ID] = rec
	}
}

// Records are the handed-off connections as a session registry keeps
// them: the member each one uses, its bytes and last activity as its
// worker has them. Every live worker is asked at once (2 s at most); one
// that does not answer, or whose loops did not, keeps its sessions'
// last known records and makes complete false.
func (s *Supervisor) Records() ([]relay.Record, bool) {
	ws := s.live()
	answers := make([]*message, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := w.request(&message{Op: "records"}); err == nil {
				answers[i] = r
			}
		}()
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	complete := true
	for i, w := range ws {
		r := answers[i]
		if r == nil || !r.OK {
			complete = false
		}
		if r == nil {
			continue
		}
		for _, got := range r.Records {
			rec, ok := s.records[got.ID]
			if !ok || s.routes[got.ID].w != w {
				continue // ended meanwhile, or not this worker's
			}
			// Who and from where are what the main process
			// authenticated; where to and how much, the worker's.
			rec.Display = route.RedactDisplay(got.Display)
			rec.Active, rec.Bytes = got.Active, got.Bytes
			s.records[got.ID] = rec
		}
	}
	out := make([]relay.Record, 0, len(s.records))
	for _, r := range s.records {
		out = append(out, r)
	}
	return out, complete
}
