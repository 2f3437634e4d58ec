package loop

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Counters are the server's totals for metrics; traffic of live sessions
// is counted at each full sweep (about a second old).
type Counters struct {
	Sessions, Buffered int64
	// Connections open, those still logging in, and those refused by the
	// connection caps (main process only).
	Connections, LoggingIn, Refused int64
	C2S, S2C                        relay.TrafficTotals
	Handshakes                      map[string]int64
}

// Counters sums the loops' traffic and the handshake outcomes.
func (s *Server) Counters() Counters {
	c := Counters{Sessions: s.count.Load(), Buffered: s.total.Load(), Handshakes: map[string]int64{},
		Connections: s.conns.Load(), LoggingIn: s.logins.Load(), Refused: s.refusals.Load()}
	c.C2S, c.S2C = s.c2s.Load(), s.s2c.Load()
	s.outcomes.Range(func(k, v any) bool {
		c.Handshakes[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return c
}

// CountHandshake records a handshake outcome; it is the sessions'
// relay.Host.CountHandshake and safe from any goroutine.
func (s *Server) CountHandshake(result string) {
	v, ok := s.outcomes.Load(result)
	if !ok {
		v, _ = s.outcomes.LoadOrStore(result, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// Adopt serves a client connection authenticated by another process (the
// privilege-separated main process): it joins one of the loops and
// carries on with h's target. conn is closed once gnet has its own copy.
func (s *Server) Adopt(h *relay.Handoff, conn net.Conn) error {
	select {
	case <-s.up:
	default:
		return errors.New("loop: server not running")
	}
	ctx := gnet.NewNetConnContext(gnet.NewContext(context.Background(), &adoptCtx{h: h}), conn)
	ch, err := s.eng.Register(ctx)
	if err != nil {
		return err
	}
	if r := <-ch; r.Err != nil {
		return r.Err
	}
	return nil
}

// adopted starts the session of a handed-over client (OnOpen).
func (s *Server) adopted(c gnet.Conn, h *relay.Handoff, now time.Time) ([]byte, gnet.Action) {
	cfg := s.opts.Config
	if cfg == nil {
		s.log.Error("adopted connection without a config", "session", h.ID)
		return nil, gnet.Close
	}
	ls := s.loopState(c.EventLoop())
	hst := &host{srv: s, el: c.EventLoop(), ls: ls}
	var conn relay.Conn = c
	var w *wsConn
	if h.Transport == "ws" {
		w = newWSConn(c, nil, int64(cfg.MaxPacketSize)+1<<20)
		conn = w
	}
	sess, err := relay.AdoptSession(cfg, hst, conn, h, now)
	if err != nil {
		s.log.Error("cannot adopt connection", "session", h.ID, "err", err)
		return nil, gnet.Close
	}
	ls.sessions[sess] = struct{}{}
	c.SetContext(&clientCtx{s: sess, ls: ls, ws: w})
	s.count.Add(1)
	return nil, gnet.None
}

// onLoops runs fn on every loop with its sessions and waits (at most
// 2 s); false when a loop did not answer in time.
func (s *Server) onLoops(fn func(ls *loopState)) bool {
	s.mu.Lock()
	states := make([]*loopState, 0, len(s.loops))
	for _, ls := range s.loops {
		states = append(states, ls)
	}
	s.mu.Unlock()
	done := make(chan struct{}, len(states))
	n := 0
	for _, ls := range states {
		err := ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			fn(ls)
			done <- struct{}{}
			return nil
		}))
		if err == nil {
			n++
		}
	}
	timeout := time.After(2 * time.Second)
	for ; n > 0; n-- {
		select {
		case <-done:
		case <-timeout:
			return false
		}
	}
	return true
}

// SessionsInfo describes every relaying session by name (proxy-ID), in id
// order; handshakes and info requests are left out.
func (s *Server) SessionsInfo() frame.Dict {
	type entry struct {
		id   uint64
		info frame.Dict
	}
	ch := make(chan entry, 64)
	var all []entry
	collected := make(chan struct{})
	go func() {
		for e := range ch {
			all = append(all, e)
		}
		close(collected)
	}()
	s.onLoops(func(ls *loopState) {
		for sess := range ls.sessions {
			if sess.Relaying() {
				ch <- entry{sess.ID, sess.Summary()}
			}
		}
	})
	close(ch)
	<-collected
	slices.SortFunc(all, func(a, b entry) int { return int(a.id - b.id) })
	d := frame.NewDict()
	for _, e := range all {
		d.Set("proxy-"+strconv.FormatUint(e.id, 10), e.info)
	}
	return d
}

// Records are the relaying sessions as a session registry keeps them,
// collected on their loops; complete is false when a loop did not answer
// in time (then a session missing from the list may still be relaying).
func (s *Server) Records() (recs []relay.Record, complete bool) {
	var mu sync.Mutex
	var out []relay.Record
	complete = s.onLoops(func(ls *loopState) {
		var local []relay.Record
		for sess := range ls.sessions {
			if r, ok := sess.Record(); ok {
				local = append(local, r)
			}
		}
		mu.Lock()
		out = append(out, local...)
		mu.Unlock()
	})
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(out), complete
}

// SessionInfo describes one session by id.
func (s *Server) SessionInfo(id uint64) (frame.Dict, bool) {
	var out frame.Dict
	s.onLoops(func(ls *loopState) {
		for sess := range ls.sessions {
			if sess.ID == id && !sess.Closed() {
				out = sess.Info()
			}
		}
	})
	return out, out != nil
}

// StopSession ends one session by id with a disconnect the client shows.
func (s *Server) StopSession(id uint64) bool {
	var found atomic.Bool
	s.onLoops(func(ls *loopState) {
		for sess := range ls.sessions {
			if sess.ID == id && !sess.Closed() {
				sess.Stop("proxy instance stopped by request")
				found.Store(true)
			}
		}
	})
	return found.Load()
}

// Shutdown disconnects every session with why (xpra's "server shutdown"),
// gives the clients up to the grace period to read it, then stops.
func (s *Server) Shutdown(ctx context.Context, why string) error {
	select {
	case <-s.booted:
	default:
		return errors.New("loop: server not running")
	}
	// No new connections while the sessions end.
	s.stopping.Store(true)
	s.closeListeners()
	s.onLoops(func(ls *loopState) {
		for sess := range ls.sessions {
			if !sess.Closed() {
				sess.Stop(why)
			}
		}
	})
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for s.count.Load() > 0 {
		select {
		case <-ctx.Done():
			return s.eng.Stop(context.Background())
		case <-tick.C:
		}
	}
	return s.eng.Stop(ctx)
}
