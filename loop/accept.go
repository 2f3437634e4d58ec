package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/relay"
)

// The proxy accepts its own connections instead of letting gnet do it:
// gnet v2 ends the whole engine, and every session with it, on the first
// accept error other than EAGAIN, and a proxy on a public port runs out of
// file descriptors sooner or later. One goroutine per listener accepts,
// applies the connection caps before anything is read, and hands each
// socket to the least busy loop.

// ticket is one accepted client connection's place in the caps: it counts
// against MaxConnections until closed, and against MaxLoginConnections
// and its source's MaxLoginsPerSource until the client has logged in or
// made way for a newer connection (admit.go). Releasing is idempotent
// and safe from any goroutine.
type ticket struct {
	srv *Server
	src string
	// stage mirrors w.stage for the loops' fast path (progress): written
	// under srv.adm.mu, read anywhere.
	stage   atomic.Uint32
	login   atomic.Bool
	open    atomic.Bool
	evicted bool     // under srv.adm.mu: made way before it was bound to its loop
	w       *waiting // under srv.adm.mu: its place in the admission queues while it logs in
}

// admitted: the client logged in.
func (t *ticket) admitted() {
	if t != nil && t.login.CompareAndSwap(true, false) {
		t.srv.adm.mu.Lock()
		t.srv.adm.remove(t)
		t.srv.adm.mu.Unlock()
		t.srv.logins.Add(-1)
		t.srv.sources.release(t.src)
	}
}

// closed: the connection is gone (or no longer this process's).
func (t *ticket) closed() {
	if t == nil {
		return
	}
	t.admitted()
	if t.open.CompareAndSwap(true, false) {
		t.srv.conns.Add(-1)
	}
}

// sourceCounts counts pre-login connections per source address.
type sourceCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *sourceCounts) take(src string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	if limit > 0 && c.n[src] >= limit {
		return false
	}
	c.n[src]++
	return true
}

func (c *sourceCounts) release(src string) {
	c.mu.Lock()
	if c.n[src] <= 1 {
		delete(c.n, src)
	} else {
		c.n[src]--
	}
	c.mu.Unlock()
}

// admit applies the caps to a new connection from src: a ticket, or the
// reason it is refused. When the pre-login cap is full the connection
// takes the place of a less advanced one (admit.go), which is told so on
// its loop; it is refused only when every pre-login connection is
// authenticated.
func (s *Server) admit(src string) (*ticket, string) {
	if max := s.opts.MaxConnections; max > 0 && s.conns.Load() >= int64(max) {
		return nil, "too many connections"
	}
	if !s.sources.take(src, s.opts.MaxLoginsPerSource) {
		return nil, "too many connections waiting to log in from your address"
	}
	t := &ticket{srv: s, src: src}
	t.login.Store(true)
	t.open.Store(true)
	ev, largest, ok := s.adm.enter(t, s.opts.MaxLoginConnections, time.Now())
	if !ok {
		s.sources.release(src)
		return nil, "too many connections waiting to log in, try again later"
	}
	s.logins.Add(1)
	s.conns.Add(1)
	if ev != nil {
		s.evict(ev)
		if now := time.Now().UnixNano(); now-s.evictLog.Load() > int64(10*time.Second) {
			// Once per interval: a crowd is evicted by the thousand.
			s.evictLog.Store(now)
			s.log.Warn("pre-login connections at their cap: the least advanced make way for new ones",
				"cap", s.opts.MaxLoginConnections, "evicted", s.evictions.Load(), "largest-prefix", largest.String())
		}
	}
	return t, ""
}

// slot is one listening socket and the settings its next connection
// gets: a reload replaces the Listener, never the socket, and a
// connection keeps the Listener it was accepted under.
type slot struct {
	ln  net.Listener
	cur atomic.Pointer[Listener]
}

// listen opens the listeners (stale unix sockets removed first).
func (s *Server) listen() error {
	slots, err := s.bind(s.listeners)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.slots = slots
	s.mu.Unlock()
	return nil
}

// bind opens a slot for each listener, or none: on an error the ones
// already open are closed.
func (s *Server) bind(ls []Listener) ([]*slot, error) {
	var slots []*slot
	for i := range ls {
		sl, err := s.open(&ls[i])
		if err != nil {
			for _, sl := range slots {
				sl.ln.Close()
			}
			return nil, err
		}
		slots = append(slots, sl)
	}
	return slots, nil
}

func (s *Server) open(l *Listener) (*slot, error) {
	if l.Inherited != nil {
		if ul, ok := l.Inherited.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
		sl := &slot{ln: l.Inherited}
		sl.cur.Store(l)
		return sl, nil
	}
	if l.Network == "unix" {
		if err := clearStaleSocket(l.Address); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen(l.Network, l.Address)
	if err != nil {
		return nil, err
	}
	if l.Network == "unix" {
		ln.(*net.UnixListener).SetUnlinkOnClose(true)
		if err := os.Chmod(l.Address, s.opts.SocketMode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("cannot set socket permissions: %w", err)
		}
	}
	sl := &slot{ln: ln}
	sl.cur.Store(l)
	return sl, nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	for _, c := range s.anchors {
		c.Close()
	}
	s.anchors = nil
	slots := s.slots
	s.mu.Unlock()
	for _, sl := range slots {
		sl.ln.Close()
	}
}

// acceptErrors are the accept failures that exhausted resources cause:
// they pass when connections close, so the listener waits and retries.
func resourceExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// acceptLoop serves one listener until it is closed.
func (s *Server) acceptLoop(sl *slot) {
	var (
		backoff  time.Duration
		lastLog  time.Time
		failures int
	)
	for {
		c, err := sl.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			failures++
			if time.Since(lastLog) > 10*time.Second {
				// Once per interval, however many: a flood of these
				// lines would be a second exhaustion.
				s.log.Warn("cannot accept connections; existing sessions go on, retrying",
					"listener", sl.cur.Load().url(), "err", err, "failures", failures, "open", s.conns.Load())
				lastLog, failures = time.Now(), 0
			}
			if !resourceExhausted(err) {
				backoff = max(backoff, 5*time.Millisecond)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.accepted(sl.cur.Load(), c)
	}
}

// accepted applies the caps and hands the connection to a loop.
func (s *Server) accepted(l *Listener, c net.Conn) {
	t, refusal := s.admit(relay.SourceOf(c.RemoteAddr()))
	if t == nil {
		s.refusals.Add(1)
		// xpra's plain-text line before a hello: the client shows it.
		// The socket's send buffer is empty, so this never blocks long.
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		c.Write([]byte("disconnect: " + refusal + "\n"))
		c.Close()
		return
	}
	ctx := gnet.NewNetConnContext(gnet.NewContext(context.Background(), &conn{role: roleAccepted, t: t, pre: &pre{l: l}}), c)
	ch, err := s.eng.Register(ctx)
	if err != nil {
		t.closed()
		c.Close()
		return
	}
	// gnet dups the socket and closes c itself; the result comes later.
	go func() {
		if r := <-ch; r.Err != nil {
			t.closed()
			s.log.Debug("cannot register a connection", "err", r.Err)
		}
	}()
}
