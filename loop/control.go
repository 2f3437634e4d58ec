package loop

import (
	"cmp"
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
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
	// Connections open, those still logging in, those refused by the
	// connection caps, and pre-login connections that made way for new
	// ones when the pre-login cap was full (main process only).
	Connections, LoggingIn, Refused, Evicted int64
	C2S, S2C                                 relay.TrafficTotals
	Handshakes                               map[string]int64
}

// Counters sums the loops' traffic and the handshake outcomes. Safe from
// any goroutine.
func (s *Server) Counters() Counters {
	c := Counters{Sessions: s.count.Load(), Buffered: s.total.Load(), Handshakes: map[string]int64{},
		Connections: s.conns.Load(), LoggingIn: s.logins.Load(), Refused: s.refusals.Load(), Evicted: s.evictions.Load()}
	c.C2S, c.S2C = s.c2s.Load(), s.s2c.Load()
	s.outcomes.Range(func(k, v any) bool {
		c.Handshakes[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return c
}

// CountHandshake records a handshake outcome; it is the sessions'
// relay.Host.CountHandshake. Safe from any goroutine.
func (s *Server) CountHandshake(result string) {
	v, ok := s.outcomes.Load(result)
	if !ok {
		v, _ = s.outcomes.LoadOrStore(result, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// Adopt serves a client connection authenticated by another process (the
// privilege-separated main process): it joins one of the loops and
// carries on with h's target. nc is closed once gnet has its own copy.
// Safe from any goroutine.
func (s *Server) Adopt(h *relay.Handoff, nc net.Conn) error {
	select {
	case <-s.up:
	default:
		return errors.New("loop: server not running")
	}
	ctx := gnet.NewNetConnContext(gnet.NewContext(context.Background(), &conn{role: roleAdopted, pre: &pre{handoff: h}}), nc)
	ch, err := s.eng.Register(ctx)
	if err != nil {
		return err
	}
	if r := <-ch; r.Err != nil {
		return r.Err
	}
	return nil
}

// adopted starts the session of a handed-over client (OnOpen): the
// transport the accepting process found (WebSocket framing and its
// masking rule, TLS terminated there) is applied as it decided.
func (s *Server) adopted(c gnet.Conn, cn *conn, now time.Time) ([]byte, gnet.Action) {
	h := cn.pre.handoff
	cn.pre = nil
	cfg := s.opts.Config
	if cfg == nil {
		s.log.Error("adopted connection without a config", "session", h.ID)
		return nil, gnet.Close
	}
	if h.Link.TLS && !cfg.Encrypted {
		cfg = s.encryptedConfig()
	}
	hst := &host{srv: s, el: c.EventLoop(), ls: cn.ls}
	var rc relay.Conn = c
	if h.Link.Transport == "ws" {
		cn.ws = newWSConn(c, int64(cfg.MaxPacketSize)+1<<20)
		cn.ws.requireMask = h.Link.RequireMask || s.opts.WSRequireMask
		rc = cn.ws
	}
	sess, err := relay.AdoptSession(cfg, hst, rc, h, now)
	if err != nil {
		s.log.Error("cannot adopt connection", "session", h.ID, "err", err)
		return nil, gnet.Close
	}
	cn.role, cn.sess = roleClient, sess
	cn.ls.sessions[sess] = struct{}{}
	s.count.Add(1)
	return nil, gnet.None
}

// encryptedConfig is Options.Config for clients whose link is TLS: made
// once, on first use.
func (s *Server) encryptedConfig() *relay.Config {
	s.encOnce.Do(func() {
		enc := *s.opts.Config
		enc.Encrypted = true
		s.encConfig = &enc
	})
	return s.encConfig
}

// onLoopsTimeout bounds how long a control request waits for a loop.
const onLoopsTimeout = 2 * time.Second

// collect runs fn on every loop and gathers what each returns, waiting at
// most the server's control timeout; complete is false when a loop did not
// answer in time. A loop busy past the timeout still runs fn later: its
// result then goes into a buffered channel nobody reads any more (never a
// closed one, and never a variable the caller reads), so a late task can
// neither panic nor race. Never call it on a loop.
func collect[T any](s *Server, fn func(ls *loopState) T) (out []T, complete bool) {
	s.mu.Lock()
	states := make([]*loopState, 0, len(s.loops))
	for _, ls := range s.loops {
		states = append(states, ls)
	}
	s.mu.Unlock()
	results := make(chan T, len(states))
	n := 0
	for _, ls := range states {
		err := ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			results <- fn(ls)
			return nil
		}))
		if err == nil {
			n++
		}
	}
	timeout := time.NewTimer(s.opts.ControlTimeout)
	defer timeout.Stop()
	for ; n > 0; n-- {
		select {
		case r := <-results:
			out = append(out, r)
		case <-timeout.C:
			return out, false
		}
	}
	return out, len(states) == len(out)
}

// SessionsInfo describes every relaying session by name (proxy-ID), in id
// order; handshakes and info requests are left out. A loop that does not
// answer in time leaves its sessions out. Safe from any goroutine but a
// loop.
func (s *Server) SessionsInfo() frame.Dict {
	type entry struct {
		id   uint64
		info frame.Dict
	}
	parts, _ := collect(s, func(ls *loopState) []entry {
		var local []entry
		for sess := range ls.sessions {
			if sess.Relaying() {
				local = append(local, entry{sess.ID, sess.Summary()})
			}
		}
		return local
	})
	all := slices.Concat(parts...)
	slices.SortFunc(all, func(a, b entry) int { return cmp.Compare(a.id, b.id) })
	d := frame.NewDict()
	for _, e := range all {
		d.Set("proxy-"+strconv.FormatUint(e.id, 10), e.info)
	}
	return d
}

// Records are the relaying sessions as a session registry keeps them,
// collected on their loops; complete is false when a loop did not answer
// in time (then a session missing from the list may still be relaying).
// Safe from any goroutine but a loop.
func (s *Server) Records() (recs []relay.Record, complete bool) {
	parts, complete := collect(s, func(ls *loopState) []relay.Record {
		var local []relay.Record
		for sess := range ls.sessions {
			if r, ok := sess.Record(); ok {
				local = append(local, r)
			}
		}
		return local
	})
	return slices.Concat(parts...), complete
}

// SessionInfo describes one session by id. Safe from any goroutine but a
// loop.
func (s *Server) SessionInfo(id uint64) (frame.Dict, bool) {
	parts, _ := collect(s, func(ls *loopState) frame.Dict {
		for sess := range ls.sessions {
			if sess.ID == id && !sess.Closed() {
				return sess.Info()
			}
		}
		return nil
	})
	for _, d := range parts {
		if d != nil {
			return d, true
		}
	}
	return nil, false
}

// StopSession ends one session by id with a disconnect the client shows.
// Safe from any goroutine but a loop.
func (s *Server) StopSession(id uint64) bool {
	parts, _ := collect(s, func(ls *loopState) bool {
		found := false
		for sess := range ls.sessions {
			if sess.ID == id && !sess.Closed() {
				sess.Stop("proxy instance stopped by request")
				found = true
			}
		}
		return found
	})
	return slices.Contains(parts, true)
}

// Shutdown disconnects every session with why (xpra's "server shutdown"),
// gives the clients up to the grace period to read it, then stops. Safe
// from any goroutine but a loop.
func (s *Server) Shutdown(ctx context.Context, why string) error {
	return s.ShutdownFor(ctx, relay.CloseShutdown, why)
}

// ShutdownFor is Shutdown with the sessions' close reason (an upgrade's
// drain). Safe from any goroutine but a loop.
func (s *Server) ShutdownFor(ctx context.Context, r relay.CloseReason, why string) error {
	select {
	case <-s.booted:
	default:
		return errors.New("loop: server not running")
	}
	// No new connections while the sessions end.
	s.stopping.Store(true)
	s.closeListeners()
	collect(s, func(ls *loopState) struct{} {
		for sess := range ls.sessions {
			if !sess.Closed() {
				sess.End(r, why)
			}
		}
		return struct{}{}
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
