package loop

import (
	"time"

	"github.com/xpraproxy/xpraproxy/relay"
)

// sweep runs on ls's loop: the urgent sessions (backpressure, closing)
// and HTTP responses being written every tick; every session (timeouts,
// buffer accounting, the budget) on a full sweep, which keeps the idle
// CPU of thousands of sessions low.
func (s *Server) sweep(ls *loopState, full, overBudget bool) {
	now := time.Now()
	for c, cn := range ls.sending {
		s.sendMore(c, cn, now)
	}
	if !full {
		for sess := range ls.urgent {
			sess.Sweep(now)
			if !sess.Urgent() {
				delete(ls.urgent, sess)
			}
		}
		return
	}
	var (
		held    int64
		biggest *relay.Session
		most    int
		// Strangers are shed before users: the largest session still
		// logging in goes first.
		stranger     *relay.Session
		strangerHeld int
		bigSplice    *splice
		spliceHeld   int
	)
	for c, cn := range ls.pending {
		held += int64(c.InboundBuffered() + c.OutboundBuffered())
		if now.After(cn.pre.http.deadline) {
			delete(ls.pending, c)
			c.Write(httpResponse(408, "Request Timeout", "request timeout\n", true))
			c.Close()
		}
	}
	for c := range ls.sending {
		held += int64(c.InboundBuffered() + c.OutboundBuffered())
	}
	for sp := range ls.splices {
		sp.sweep(now)
		n := sp.held()
		held += int64(n)
		if n > spliceHeld {
			bigSplice, spliceHeld = sp, n
		}
	}
	var c2s, s2c relay.TrafficTotals
	for sess := range ls.sessions {
		n := sess.Sweep(now)
		held += int64(n)
		a, b := sess.TrafficDelta()
		c2s, s2c = c2s.Plus(a), s2c.Plus(b)
		if sess.Relaying() && n > most {
			biggest, most = sess, n
		}
		if !sess.LoggedIn() && !sess.Closed() && n > strangerHeld {
			stranger, strangerHeld = sess, n
		}
		if !sess.Urgent() {
			delete(ls.urgent, sess)
		}
	}
	// Over the global budget, each loop sheds its largest holder per
	// sweep until the total falls.
	switch {
	case !overBudget:
	case stranger != nil:
		stranger.Shed()
	case bigSplice != nil && spliceHeld > most:
		bigSplice.fail("proxy buffer budget exceeded")
	case biggest != nil && most > 0:
		biggest.Shed()
	}
	ls.buffered.Store(held)
	s.c2s.Add(c2s)
	s.s2c.Add(s2c)
}
