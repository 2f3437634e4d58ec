package privsep

// What the supervisor tells about its workers and their sessions: the
// info and stop requests of the proxy's socket, the metrics' counters.

import (
	"strconv"
	"sync"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/loop"
)

// SessionInfo asks the worker holding connection id about it.
func (s *Supervisor) SessionInfo(id uint64) (frame.Dict, bool) {
	w := s.route(id)
	if w == nil {
		return nil, false
	}
	r, err := w.request(&message{Op: "info", ID: id})
	if err != nil || !r.OK {
		return nil, false
	}
	d, err := decodeInfo(r.Info)
	return d, err == nil
}

// StopSession ends connection id in its worker.
func (s *Supervisor) StopSession(id uint64) bool {
	w := s.route(id)
	if w == nil {
		return false
	}
	r, err := w.request(&message{Op: "stop", ID: id})
	return err == nil && r.OK
}

// Sessions describes every relayed connection of every worker.
func (s *Supervisor) Sessions() frame.Dict {
	out := frame.NewDict()
	for _, w := range s.live() {
		r, err := w.request(&message{Op: "sessions"})
		if err != nil {
			continue
		}
		if d, err := decodeInfo(r.Info); err == nil {
			out = append(out, d...)
		}
	}
	return out
}

// Workers describes the worker processes.
func (s *Supervisor) Workers() frame.Dict {
	d := frame.NewDict()
	for _, w := range s.live() {
		s.mu.Lock()
		n := w.sessions
		s.mu.Unlock()
		d.Set(strconv.Itoa(w.pid), frame.NewDict("uid", w.acct.UID, "gid", w.acct.GID, "sessions", n, "socket", w.socket))
	}
	return d
}

// Counters sums the workers' counters; Workers is how many are running.
// Traffic and handshakes are counters that only grow: those of workers
// that exited stay (as of their last report, which an exiting worker
// makes with each session's end), and a worker that does not answer in
// time counts with its last answer.
func (s *Supervisor) Counters() (loop.Counters, int) {
	ws := s.live()
	fresh := make([]*loop.Counters, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := w.request(&message{Op: "counters"}); err == nil {
				fresh[i] = r.Counters
			}
		}()
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := loop.Counters{Handshakes: map[string]int64{}, C2S: s.gone.C2S, S2C: s.gone.S2C}
	for k, v := range s.gone.Handshakes {
		sum.Handshakes[k] = v
	}
	for i, w := range ws {
		if w.folded {
			continue // exited meanwhile: counted in gone
		}
		if fresh[i] != nil {
			w.last = fresh[i]
		}
		c := w.last
		if c == nil {
			continue
		}
		sum.Sessions += c.Sessions
		sum.Buffered += c.Buffered
		sum.C2S, sum.S2C = sum.C2S.Plus(c.C2S), sum.S2C.Plus(c.S2C)
		for k, v := range c.Handshakes {
			sum.Handshakes[k] += v
		}
	}
	return sum, len(ws)
}

// PIDs lists the running workers' process ids.
func (s *Supervisor) PIDs() []int {
	var out []int
	for _, w := range s.live() {
		out = append(out, w.pid)
	}
	return out
}
