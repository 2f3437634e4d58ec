// Package loop is xpraproxy's reactor, a thin adapter between gnet and
// relay's sessions: gnet event loops serving every listener, the backends
// enrolled beside their clients, the transports it terminates (TLS,
// WebSocket), streams from other libraries, the splices of a root proxy,
// the timers, the bounded pools of off-loop work and the global buffer
// budget. docs/loop.md says which goroutine runs what and, for every
// exported method, whether it is loop-only.
package loop

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/xpraproxy/xpraproxy/frame"
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
	// Inherited is the listening socket when another process opened it
	// (systemd's socket activation, the proxy it upgrades): it is served
	// as it is, never bound, chmod-ed or unlinked (a unix one's path is
	// its opener's, who may hand it to our successor); the rest of the
	// path (caps, sniffing, TLS) is the same. Stop closes it.
	Inherited net.Listener
	// SSH serves clients whose first bytes are "SSH-" (Kind "tcp"), or
	// every client (Kind "ssh"); nil: none (an SSH client is told
	// "invalid packet format, SSH packet", as by xpra without
	// ssh-upgrade).
	SSH SSHServer

	tlsConfig *relay.Config // Config with Encrypted set, for TLS links
	serverTLS *tls.Config   // TLS as the handshakes use it (noTickets)
	sshConfig *relay.Config // the same, for the xpra channels of SSH connections
}

// prepare derives what a Listener's connections need from its fields;
// once a Listener is in a slot it is never written again.
func (l *Listener) prepare() {
	l.tlsConfig, l.serverTLS = nil, nil
	if l.TLS != nil {
		enc := *l.Config
		enc.Encrypted = true
		l.tlsConfig = &enc
		l.serverTLS = noTickets(l.TLS)
	}
	l.sshConfig = nil
	if l.SSH != nil {
		enc := *l.Config
		enc.Encrypted = true
		l.sshConfig = &enc
	}
}

// key is what a reload matches listeners by.
func (l *Listener) key() string { return l.Network + "://" + l.Address }

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
	// ReadSize is the most one read takes from a socket (gnet's read
	// buffer, one per loop); default 32 KiB. A paused session holds up
	// to this much of its source's bytes (docs/memory.md).
	ReadSize int
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
	// ControlTimeout bounds how long a control request (info, list,
	// stop) waits for a busy loop; default 2 s.
	ControlTimeout time.Duration
}

// Server serves listeners until Stop.
type Server struct {
	gnet.BuiltinEventEngine
	listeners []Listener // as given to New; Run binds them into slots
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
	adm           admission // the pre-login tickets, for evictions (admit.go)
	refusals      atomic.Int64
	evictions     atomic.Int64 // pre-login connections that made way for new ones
	evictLog      atomic.Int64 // when an eviction was last logged (unix ns)
	stopping      atomic.Bool
	files         fileCache

	mu        sync.Mutex
	loops     map[gnet.EventLoop]*loopState
	loopOrder []*loopState // the loops in the order they became known (streams take them in turn)
	nextLoop  int
	// anchorPath is gnet's own listener, which only the server dials:
	// one connection per loop there makes every loop known before any
	// client arrives (a server of streams alone has no other).
	anchorPath string
	anchors    []net.Conn
	// slots are the listening sockets (accept.go, reload.go), under mu;
	// reloadMu serialises reloads.
	slots      []*slot
	reloadMu   sync.Mutex
	handedOver atomic.Bool  // StopAccepting ran: a successor serves the listeners
	total      atomic.Int64 // buffered bytes, summed by the sweeps
	count      atomic.Int64 // open client sessions

	spliced atomic.Int64 // client connections spliced to a worker (splice.go)
	parks   atomic.Int64 // sockets parked by flow control (park.go)

	encOnce   sync.Once
	encConfig *relay.Config // Options.Config for TLS links (adopted)

	// Traffic relayed (added at each full sweep and at each close), and
	// handshake outcomes.
	c2s, s2c relay.Traffic
	outcomes sync.Map // result string → *atomic.Int64

	ticks      int          // sweeps so far (ticker goroutine only)
	handshakes atomic.Int64 // off-loop jobs finished (Activity)
}

// loopState is touched only on its own loop.
type loopState struct {
	el       gnet.EventLoop
	sessions map[*relay.Session]struct{}
	urgent   map[*relay.Session]struct{} // swept at every tick
	pending  map[gnet.Conn]*conn         // HTTP requests in progress
	sending  map[gnet.Conn]*conn         // HTTP responses being written
	splices  map[*splice]struct{}        // clients spliced to workers
	flows    map[*conn]*flow             // connections whose reading is paused (park.go)
	buffered atomic.Int64                // read by the ticker

	flowQueued, flowArmed bool // a flowTick is queued, or its timer set

	handing   map[*relay.Session]*handing // sessions being handed over (handover.go)
	handArmed bool                        // a handoverTick's timer is set
}

// New makes a server; Run starts it. Safe from any goroutine.
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
	if opts.ControlTimeout <= 0 {
		opts.ControlTimeout = onLoopsTimeout
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
		srv.listeners[i].prepare()
	}
	return srv
}

// Stats describes the whole proxy for the local control socket: sessions,
// connections, buffered bytes and the Go runtime's memory. Safe from any
// goroutine (it stops the world briefly: not from a loop's hot path); a
// caller that wants live heap figures collects first.
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
		"evicted", s.evictions.Load(),
		"spliced", s.spliced.Load(),
		"parked", s.parks.Load(),
	)
}

// Activity is how busy the logins keep the proxy, for the process's
// memory tuning (cmd/xpraproxy owns the GC target and returning memory to
// the OS): the off-loop jobs finished so far, and whether any is queued or
// running. Safe from any goroutine.
func (s *Server) Activity() (handshakes int64, busy bool) {
	return s.handshakes.Load(), s.auth.busy() || s.dial.busy()
}

func (l Listener) url() string { return l.Network + "://" + l.Address }

// Run serves until Stop is called or the engine fails. Stale unix sockets
// are removed before binding; live ones are an error (another server).
// Call it once, from any goroutine but a loop; it blocks.
func (s *Server) Run() error {
	if err := s.listen(); err != nil {
		return err
	}
	loops := s.opts.Loops
	readSize := s.opts.ReadSize
	if readSize <= 0 {
		readSize = 32 << 10
	}
	opts := []gnet.Option{
		gnet.WithTicker(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithReuseAddr(true),
		gnet.WithReadBufferCap(readSize),
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
	s.anchorPath = filepath.Join(private, "gnet")
	err = gnet.Rotate(s, []string{"unix://" + s.anchorPath}, opts...)
	s.closeListeners()
	if err == nil && !s.stopping.Load() {
		// gnet logs why and returns nil; a supervisor must see a
		// failure to restart the proxy.
		err = errors.New("loop: the event loops ended unexpectedly")
	}
	return err
}

// anchorLoops dials gnet's own listener once per event loop, one at a
// time: the least-connections balancer gives each dial a loop without
// connections, so every loop becomes known (OnOpen, roleAnchor). They
// stay open until Stop and hold no session.
func (s *Server) anchorLoops() {
	n := s.opts.Loops
	if n <= 0 {
		n = runtime.NumCPU()
	}
	for range n {
		before := s.knownLoops()
		c, err := net.Dial("unix", s.anchorPath)
		if err != nil {
			s.log.Warn("cannot reach the loops' own listener", "err", err)
			return
		}
		s.mu.Lock()
		s.anchors = append(s.anchors, c)
		s.mu.Unlock()
		for deadline := time.Now().Add(time.Second); s.knownLoops() == before && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
}

func (s *Server) knownLoops() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.loops)
}

// Ready is closed once the listeners accept connections and the loops
// run, every loop known (gnet calls OnBoot before it starts them). Safe
// from any goroutine.
func (s *Server) Ready() <-chan struct{} { return s.up }

// Stop ends the engine and every connection. Safe from any goroutine but
// a loop.
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

// Sessions is the number of open client sessions. Safe from any
// goroutine.
func (s *Server) Sessions() int64 { return s.count.Load() }

// Buffered is the bytes held in user space, as of the last sweep. Safe
// from any goroutine.
func (s *Server) Buffered() int64 { return s.total.Load() }

// Parks is how many times flow control took a socket away from gnet
// (park.go). Safe from any goroutine.
func (s *Server) Parks() int64 { return s.parks.Load() }

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

// OnBoot records the engine and restricts unix socket permissions (gnet,
// once, before the loops run).
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	close(s.booted)
	return gnet.None
}

func (s *Server) loopState(el gnet.EventLoop) *loopState {
	s.mu.Lock()
	defer s.mu.Unlock()
	ls := s.loops[el]
	if ls == nil {
		ls = &loopState{el: el, sessions: map[*relay.Session]struct{}{}, urgent: map[*relay.Session]struct{}{},
			pending: map[gnet.Conn]*conn{}, sending: map[gnet.Conn]*conn{}, splices: map[*splice]struct{}{}, flows: map[*conn]*flow{}}
		s.loops[el] = ls
		s.loopOrder = append(s.loopOrder, ls)
	}
	return ls
}

// OnTick posts a sweep to every loop. It runs on gnet's ticker goroutine,
// which must not touch connections itself.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.upOnce.Do(func() {
		go func() {
			s.anchorLoops()
			s.mu.Lock()
			for _, sl := range s.slots {
				go s.acceptLoop(sl)
			}
			s.mu.Unlock()
			close(s.up)
		}()
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
