// Package loop is xpraproxy's reactor: gnet event loops serving every
// listener, the backends enrolled beside their clients, the timers, the
// bounded pool of off-loop work and the global buffer budget.
package loop

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/cmem"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Listener is one address to serve with the sessions' configuration.
type Listener struct {
	// Network is "tcp" or "unix"; Address is host:port or a path.
	Network, Address string
	// Kind is what the port accepts (xpra's socket types): "tcp" (xpra,
	// HTTP/WebSocket and, with TLS set, TLS; the default for tcp), "ws"
	// (HTTP/WebSocket, TLS), "ssl" (TLS only, then xpra or HTTP), "wss"
	// (TLS only, then HTTP). Unix listeners speak xpra.
	Kind   string
	Config *relay.Config
	// TLS is the server certificate (--ssl-cert); nil: no TLS.
	TLS *tls.Config
	// HTML is the HTML5 client's directory served to plain GETs ("":
	// none).
	HTML string

	tlsConfig *relay.Config // Config with Encrypted set, for TLS links
	ln        net.Listener  // accepted by acceptLoop
}

func (l *Listener) mode() mode {
	switch l.Kind {
	case "ws":
		return modeHTTP
	case "ssl":
		return modeTLSAny
	case "wss":
		return modeTLSHTTP
	}
	return modeAny
}

// Options tune the reactor.
type Options struct {
	Loops          int           // event loops; 0: one per CPU
	SweepInterval  time.Duration // backpressure and closing sessions; default 100 ms
	FullSweepEvery int           // every Nth sweep visits every session (timeouts); default 10
	MaxInFlight    int           // workers of each off-loop pool (password checks, dials); default 256
	WorkQueue      int           // jobs waiting for each pool before sessions are refused; default 4096
	MaxBufferTotal int64         // global budget of buffered bytes; 0: none
	// MaxConnections caps open client connections, MaxLoginConnections
	// those still logging in (waiting on a challenge included), and
	// MaxLoginsPerSource those of one address: new connections beyond
	// them are refused with a reason before anything is read. 0: no cap.
	MaxConnections, MaxLoginConnections, MaxLoginsPerSource int
	// WSRequireMask closes every client WebSocket connection that sends
	// unmasked frames (RFC 6455 5.1). Without it, only connections whose
	// upgrade came from a browser (an Origin header) must mask: xpra's
	// own python clients send unmasked frames and no Origin.
	WSRequireMask bool
	SocketMode    os.FileMode // for unix listeners; default 0600
	Log           *slog.Logger
	// HTTPTimeout bounds an HTTP request's head and keep-alive idle time
	// (xpra's proxy: 1 s for the websocket handshake); default 10 s.
	HTTPTimeout time.Duration
	// OnClosed, when set, is told (on a loop) that a client session
	// ended: a worker reports it to the main process.
	OnClosed func(id uint64)
	// Config is for sessions adopted from another process (Adopt); a
	// listener's config otherwise.
	Config *relay.Config
	// FirstID is the id of the first accepted connection (default 1).
	FirstID uint64
	// BurstGCPercent is the Go GC target while logins run: a burst of
	// handshakes allocates decoded hellos (a 3.1 client's is 67 KB that
	// decodes to thousands of values) that are garbage a moment later,
	// and the steady target tuned for idle density makes the collector
	// run after every few of them. The steady target comes back a second
	// after the burst. 0, or a steady target at or above it: unchanged.
	BurstGCPercent int
}

// Server serves listeners until Stop.
type Server struct {
	gnet.BuiltinEventEngine
	listeners []Listener
	opts      Options
	log       *slog.Logger

	eng    gnet.Engine
	booted chan struct{} // OnBoot ran: eng is set
	up     chan struct{} // the loops run (first tick)
	upOnce sync.Once
	nextID atomic.Uint64
	auth   *workPool // password checks and requests
	dial   *workPool // routing, session starts, dials, handoffs

	// The connection caps (accept.go).
	conns, logins atomic.Int64
	sources       sourceCounts
	refusals      atomic.Int64
	stopping      atomic.Bool
	files         fileCache

	mu    sync.Mutex
	loops map[gnet.EventLoop]*loopState
	total atomic.Int64 // buffered bytes, summed by the sweeps
	count atomic.Int64 // open client sessions

	tlsConns atomic.Int64 // TLS bridges (two goroutines each; root proxies)

	// Traffic relayed (added at each full sweep and at each close), and
	// handshake outcomes.
	c2s, s2c relay.Traffic
	outcomes sync.Map // result string → *atomic.Int64

	// Memory of handshake bursts goes back to the OS once they are over.
	ticks      int          // sweeps so far (ticker goroutine only)
	handshakes atomic.Int64 // off-loop jobs finished
	released   int64        // handshakes at the last release (ticker only)
	releasedAt time.Time
	gc         burstGC // ticker only
}

// loopState is touched only on its own loop.
type loopState struct {
	el       gnet.EventLoop
	sessions map[*relay.Session]struct{}
	urgent   map[*relay.Session]struct{} // swept at every tick
	pending  map[gnet.Conn]*sniffCtx     // HTTP requests in progress
	sending  map[gnet.Conn]*sniffCtx     // HTTP responses being written
	buffered atomic.Int64
}

// adoptCtx marks a connection handed over by another process.
type adoptCtx struct{ h *relay.Handoff }

type clientCtx struct {
	s     *relay.Session
	ls    *loopState
	t     *ticket    // nil for adopted connections
	sniff *sniffInfo // protocol not confirmed yet
	ws    *wsConn    // WebSocket framing
	tls   *tlsConn   // TLS on the loop
}

type serverCtx struct {
	s  *relay.Session
	b  *relay.Backend
	ls *loopState
	ws *wsConn // ws:// and wss:// targets
}

// New makes a server; Run starts it.
func New(listeners []Listener, opts Options) *Server {
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = 100 * time.Millisecond
	}
	if opts.FullSweepEvery <= 0 {
		opts.FullSweepEvery = 10
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 256
	}
	if opts.WorkQueue <= 0 {
		opts.WorkQueue = 4096
	}
	if opts.SocketMode == 0 {
		opts.SocketMode = 0o600
	}
	if opts.HTTPTimeout <= 0 {
		opts.HTTPTimeout = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	srv := &Server{
		listeners: listeners,
		opts:      opts,
		log:       opts.Log,
		booted:    make(chan struct{}),
		up:        make(chan struct{}),
		loops:     map[gnet.EventLoop]*loopState{},
	}
	srv.auth = newWorkPool(srv, opts.MaxInFlight, opts.WorkQueue)
	srv.dial = newWorkPool(srv, opts.MaxInFlight, opts.WorkQueue)
	if opts.FirstID > 0 {
		srv.nextID.Store(opts.FirstID - 1)
	}
	for i := range listeners {
		l := &srv.listeners[i]
		if l.TLS != nil {
			enc := *l.Config
			enc.Encrypted = true
			l.tlsConfig = &enc
		}
	}
	return srv
}

// Stats describes the whole proxy for the local control socket: sessions,
// connections, buffered bytes and the Go runtime's memory. It never runs
// on a loop; a caller that wants live heap figures collects first.
func (s *Server) Stats() frame.Dict {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return frame.NewDict(
		"sessions", s.count.Load(),
		"buffered", s.total.Load(),
		"pid", os.Getpid(),
		"heap-inuse", int64(m.HeapInuse),
		"heap-alloc", int64(m.HeapAlloc),
		"sys", int64(m.Sys),
		"goroutines", int64(runtime.NumGoroutine()),
		"connections", s.conns.Load(),
		"logging-in", s.logins.Load(),
		"refused", s.refusals.Load(),
	)
}

func (l Listener) url() string { return l.Network + "://" + l.Address }

// Run serves until Stop is called or the engine fails. Stale unix sockets
// are removed before binding; live ones are an error (another server).
func (s *Server) Run() error {
	if err := s.listen(); err != nil {
		return err
	}
	loops := s.opts.Loops
	opts := []gnet.Option{
		gnet.WithTicker(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithReuseAddr(true),
		// One read per loop takes up to this much: draw packets are
		// 10s of KiB, so 256 KiB means fewer events per packet. It is
		// per loop, not per connection.
		gnet.WithReadBufferCap(256 << 10),
		gnet.WithLogger(gnetLogger{s.log}),
		// Adopt registers connections from other goroutines, which the
		// round-robin balancer does not allow (gnet's docs).
		gnet.WithLoadBalancing(gnet.LeastConnections),
	}
	if loops > 0 {
		opts = append(opts, gnet.WithNumEventLoop(loops))
	} else {
		opts = append(opts, gnet.WithMulticore(true))
	}
	// acceptLoop accepts (accept.go). gnet still needs one listener of
	// its own (its engine refuses Register and Stop without one): a unix
	// socket in a private directory that nobody else can reach.
	private, err := os.MkdirTemp("", "xpraproxy-loop-")
	if err != nil {
		s.closeListeners()
		return fmt.Errorf("loop: %w", err)
	}
	defer os.RemoveAll(private)
	err = gnet.Rotate(s, []string{"unix://" + filepath.Join(private, "gnet")}, opts...)
	s.closeListeners()
	if err == nil && !s.stopping.Load() {
		// gnet logs why and returns nil; a supervisor must see a
		// failure to restart the proxy.
		err = errors.New("loop: the event loops ended unexpectedly")
	}
	return err
}

// Ready is closed once the listeners accept connections and the loops
// run (gnet calls OnBoot before it starts them).
func (s *Server) Ready() <-chan struct{} { return s.up }

// Stop ends the engine and every connection.
func (s *Server) Stop(ctx context.Context) error {
	select {
	case <-s.booted:
	default:
		return errors.New("loop: server not running")
	}
	s.stopping.Store(true)
	s.closeListeners()
	return s.eng.Stop(ctx)
}

// Sessions is the number of open client connections.
func (s *Server) Sessions() int64 { return s.count.Load() }

// Buffered is the bytes held in user space, as of the last sweep.
func (s *Server) Buffered() int64 { return s.total.Load() }

func clearStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("loop: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("loop: %s is in use by another server", path)
	}
	return os.Remove(path)
}

// OnBoot records the engine and restricts unix socket permissions.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	for _, l := range s.listeners {
		if l.Network == "unix" {
			if err := os.Chmod(l.Address, s.opts.SocketMode); err != nil {
				s.stopping.Store(true)
				s.log.Error("cannot set socket permissions", "path", l.Address, "err", err)
				return gnet.Shutdown
			}
		}
	}
	close(s.booted)
	return gnet.None
}

func (s *Server) loopState(el gnet.EventLoop) *loopState {
	s.mu.Lock()
	defer s.mu.Unlock()
	ls := s.loops[el]
	if ls == nil {
		ls = &loopState{el: el, sessions: map[*relay.Session]struct{}{}, urgent: map[*relay.Session]struct{}{},
			pending: map[gnet.Conn]*sniffCtx{}, sending: map[gnet.Conn]*sniffCtx{}}
		s.loops[el] = ls
	}
	return ls
}

// OnOpen starts a session for a client, or hands an enrolled backend to
// its session.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	now := time.Now()
	if sc, ok := c.Context().(*serverCtx); ok {
		sc.ls = s.loopState(c.EventLoop())
		b := sc.b
		sc.b = nil // the server's hello is not kept for the session's life
		var conn relay.Conn = c
		if b.WS != nil {
			sc.ws = newWSConn(c, nil, frame.AbsMaxPacketSize+1<<20)
			sc.ws.remaining = b.WS.Remaining
			conn = sc.ws
		}
		sc.s.ServerOpened(conn, b, now)
		return nil, gnet.None
	}
	if ac, ok := c.Context().(*adoptCtx); ok {
		return s.adopted(c, ac.h, now)
	}
	ls := s.loopState(c.EventLoop())
	if tc, ok := c.Context().(*tlsCtx); ok {
		// The decrypted side of a TLS bridge: sniff again.
		ctx := s.startSession(c, ls, tc.l.configFor(tc.mode), peerConn{c, tc.peer}, tc.t, now)
		ctx.sniff = &sniffInfo{l: tc.l, mode: tc.mode, peer: tc.peer}
		return nil, gnet.None
	}
	ac, ok := c.Context().(*acceptCtx)
	if !ok {
		s.log.Error("connection without a listener", "local", c.LocalAddr())
		return nil, gnet.Close
	}
	l := ac.l
	ctx := s.startSession(c, ls, l.Config, c, ac.t, now)
	if l.Network == "tcp" {
		ctx.sniff = &sniffInfo{l: l, mode: l.mode()}
	}
	return nil, gnet.None
}

// OnTraffic feeds the bytes to the connection's session. A TLS
// connection's ciphertext is decrypted first, and everything after sees
// the plaintext (c becomes the tlsConn).
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	now := time.Now()
	if hs, ok := c.Context().(*tlsHandshake); ok {
		return s.handshakeTraffic(c, hs)
	}
	if tl := tlsOf(c.Context()); tl != nil {
		err := tl.decrypt()
		if act := s.traffic(tl, now); act != gnet.None || err == nil {
			return act
		}
		if !errors.Is(err, io.EOF) {
			s.log.Debug("tls stream broken", "peer", c.RemoteAddr().String(), "err", err)
		}
		return gnet.Close
	}
	return s.traffic(c, now)
}

func (s *Server) traffic(c gnet.Conn, now time.Time) gnet.Action {
	switch ctx := c.Context().(type) {
	case *clientCtx:
		if ctx.sniff != nil {
			if act, handled := s.sniff(c, ctx, now); handled {
				return act
			}
		}
		if ctx.ws != nil {
			return s.wsTraffic(ctx, now)
		}
		ctx.s.ClientTraffic(now)
	case *sniffCtx:
		return s.serveHTTP(c, ctx, s.loopState(c.EventLoop()), now)
	case *serverCtx:
		if ctx.ws != nil {
			if err := ctx.ws.decode(); err != nil {
				ctx.ws.Conn.Discard(ctx.ws.Conn.InboundBuffered())
				if !errors.Is(err, errWSClosed) {
					s.log.Warn("bad websocket framing from the server", "session", ctx.s.ID, "err", err)
				}
				return gnet.Close
			}
		}
		ctx.s.ServerTraffic(now)
	default:
		c.Discard(c.InboundBuffered())
	}
	return gnet.None
}

// OnClose tells the session which side went away.
func (s *Server) OnClose(c gnet.Conn, err error) gnet.Action {
	switch ctx := c.Context().(type) {
	case *clientCtx:
		ctx.t.closed()
		ctx.s.OnClientClosed(err)
		if _, ok := ctx.ls.sessions[ctx.s]; ok {
			delete(ctx.ls.sessions, ctx.s)
			delete(ctx.ls.urgent, ctx.s)
			s.count.Add(-1)
			c2s, s2c := ctx.s.TrafficDelta()
			s.c2s.Add(c2s)
			s.s2c.Add(s2c)
			if s.opts.OnClosed != nil {
				s.opts.OnClosed(ctx.s.ID)
			}
		}
	case *serverCtx:
		ctx.s.OnServerClosed(err)
	case *sniffCtx:
		ctx.t.closed()
		ls := s.loopState(c.EventLoop())
		key := c
		if ctx.tls != nil {
			key = ctx.tls
		}
		delete(ls.pending, key)
		delete(ls.sending, key)
	case *tlsHandshake:
		ctx.closed()
	}
	if tl := tlsOf(c.Context()); tl != nil {
		tl.dropBuffers()
	}
	return gnet.None
}

// OnTick posts a sweep to every loop. It runs on gnet's ticker goroutine,
// which must not touch connections itself.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.upOnce.Do(func() {
		for i := range s.listeners {
			go s.acceptLoop(&s.listeners[i])
		}
		close(s.up)
	})
	s.mu.Lock()
	states := make([]*loopState, 0, len(s.loops))
	for _, ls := range s.loops {
		states = append(states, ls)
	}
	s.mu.Unlock()
	var total int64
	for _, ls := range states {
		total += ls.buffered.Load()
	}
	s.total.Store(total)
	s.tuneGC()
	s.releaseMemory()
	over := s.opts.MaxBufferTotal > 0 && total > s.opts.MaxBufferTotal
	s.ticks++
	full := over || s.ticks%s.opts.FullSweepEvery == 0
	for _, ls := range states {
		ls := ls
		_ = ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			s.sweep(ls, full, over)
			return nil
		}))
	}
	return s.opts.SweepInterval, gnet.None
}

// releaseMemory returns the memory of a burst of handshakes (decoded
// hellos, sqlite lookups, worker stacks) to the OS once the burst is over,
// Go's heap and the C heap (sqlite's page caches) alike,
// at most every 10 s: the density of idle sessions is the point of the
// proxy. Runs on the ticker goroutine.
func (s *Server) releaseMemory() {
	done := s.handshakes.Load()
	if done == s.released || s.auth.busy() || s.dial.busy() || time.Since(s.releasedAt) < 10*time.Second {
		return
	}
	s.released, s.releasedAt = done, time.Now()
	debug.FreeOSMemory()
	cmem.Trim()
}

// burstGC is the GC target's state across handshake bursts.
type burstGC struct {
	seen     int64 // handshakes at the last tick
	lastBusy time.Time
	inBurst  bool
	steady   int // the target to come back to
}

// tuneGC raises the GC target while handshakes run and restores it a
// second after the last one (ticker goroutine).
func (s *Server) tuneGC() {
	if s.opts.BurstGCPercent <= 0 {
		return
	}
	g := &s.gc
	done := s.handshakes.Load()
	busy := done != g.seen || s.auth.busy() || s.dial.busy()
	g.seen = done
	now := time.Now()
	switch {
	case busy:
		g.lastBusy = now
		if !g.inBurst {
			prev := debug.SetGCPercent(s.opts.BurstGCPercent)
			if prev < 0 || prev >= s.opts.BurstGCPercent {
				debug.SetGCPercent(prev) // off, or already at least that
				return
			}
			g.steady, g.inBurst = prev, true
		}
	case g.inBurst && now.Sub(g.lastBusy) > time.Second:
		debug.SetGCPercent(g.steady)
		g.inBurst = false
	}
}

// sweep runs on ls's loop: the urgent sessions (backpressure, closing)
// every tick; every session (timeouts, buffer accounting, the budget) on a
// full sweep, which keeps the idle CPU of thousands of sessions low.
func (s *Server) sweep(ls *loopState, full, overBudget bool) {
	now := time.Now()
	for c, sc := range ls.sending {
		s.sendMore(c, sc, ls, now)
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
	)
	for c, sc := range ls.pending {
		held += int64(c.InboundBuffered() + c.OutboundBuffered())
		if now.After(sc.deadline) {
			delete(ls.pending, c)
			c.Write(httpResponse(408, "Request Timeout", "request timeout\n", true))
			c.Close()
		}
	}
	for c := range ls.sending {
		held += int64(c.InboundBuffered() + c.OutboundBuffered())
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
	// Over the global budget, each loop sheds its largest relaying
	// session per sweep until the total falls.
	switch {
	case !overBudget:
	case stranger != nil:
		stranger.Shed()
	case biggest != nil && most > 0:
		biggest.Shed()
	}
	ls.buffered.Store(held)
	s.c2s.Add(c2s)
	s.s2c.Add(s2c)
}
