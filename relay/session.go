package relay

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/bridge"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
)

// Conn is what a session needs of a connection: the loop-only methods of
// gnet.Conn. Slices returned by Peek are valid only until Discard or the
// end of the current callback.
type Conn interface {
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	InboundBuffered() int
	OutboundBuffered() int
	Write(p []byte) (int, error)
	Writev(bs [][]byte) (int, error)
	Close() error
	RemoteAddr() net.Addr
	Fd() int
}

// closeFramer is a client connection whose transport has a close message
// of its own to send before the socket is shut: WebSocket's close frame.
type closeFramer interface{ SendClose() }

// Host is what the reactor provides to a session. Every method is called
// on the session's loop.
type Host interface {
	// Go queues work to run off the loop (it may block) in the bounded
	// pool of its kind, then done on the loop. It returns false, running
	// neither, when that pool's queue is full.
	Go(kind WorkKind, work, done func()) bool
	// Admitted tells the reactor, once, that the client has logged in:
	// it no longer counts against the pre-login limits.
	Admitted(s *Session)
	// Progress tells the reactor, once per stage and in order, how far
	// the login has come: when its pre-login cap is full, the least
	// advanced connection makes way for a new one (Evict).
	Progress(s *Session, st LoginStage)
	// Enroll moves the backend's socket onto the session's loop; the
	// reactor then calls ServerOpened.
	Enroll(s *Session, b *Backend) error
	// PauseReading asks the reactor to stop reading c from the network
	// until ResumeReading, so that c's peer is slowed by TCP (flow.go);
	// what c already holds stays readable. Meanwhile the reactor may put
	// another Conn in c's place (Session.Replace) and calls Flow soon
	// and often. Idempotent; a Conn the reactor cannot pause (a stream
	// with a window of its own) is left alone.
	PauseReading(c Conn)
	// ResumeReading undoes PauseReading and delivers what c holds.
	ResumeReading(c Conn)
	// Watch asks for Sweep at the short interval while the session
	// Urgent(): a paused pipe or a closing connection. Other sessions are
	// swept at the long interval, which bounds idle CPU.
	Watch(s *Session)
	// Post runs fn on the session's loop, from any goroutine (encoder
	// results).
	Post(fn func())
	// Release gives the client's connection up for another process (a
	// privilege-separated worker): a socket from which that process reads
	// and writes the client's xpra stream — the connection's own (a dup,
	// the loop's connection closed at once, without writing or shutting
	// anything down), or the plaintext end of a splice when the
	// transport (TLS, a stream) must stay in this process. The session
	// then counts as closed here; the caller owns the file.
	Release(c Conn) (*os.File, error)
	// Stats are the proxy's own figures (sessions, memory) that a
	// session's info includes; nil for none. Called from any goroutine.
	Stats() frame.Dict
	// CountHandshake counts a handshake outcome (metrics), from any
	// goroutine.
	CountHandshake(result string)
}

// LoginStage is how far a client's login has come, as the session tells
// the reactor (Host.Progress); before LoginHello the reactor itself
// knows whether any bytes came.
type LoginStage uint8

const (
	LoginHello         LoginStage = iota + 1 // the hello was read: a challenge or authentication follows
	LoginAuthenticated                       // every module passed: the session is being found, started or dialed
)

// WorkKind names the pool that runs a piece of off-loop work: password
// checks and backend dials have separate pools, so that logins to a target
// that never answers cannot delay other users' logins.
type WorkKind uint8

const (
	WorkAuth WorkKind = iota // authentication modules, info and stop requests
	WorkDial                 // finding the target, starting sessions, dialing, handoffs
)

// Control is the proxy's view of all its connections, for the info and
// stop requests of its own socket.
type Control interface {
	// Info describes the proxy: its sessions and figures.
	Info() frame.Dict
	// SessionInfo describes one relayed connection by id.
	SessionInfo(id uint64) (frame.Dict, bool)
	// StopSession ends one relayed connection by id.
	StopSession(id uint64) bool
	// Shutdown stops the proxy (xpra stop :DISPLAY).
	Shutdown()
	// Reload reads the proxy's configuration again and applies it
	// (xpraproxy reload): what changed, or why nothing did.
	Reload() (string, error)
	// Upgrade starts the proxy's new binary on its sockets (xpraproxy
	// upgrade): what happened, or why nothing did.
	Upgrade() (string, error)
}

type state uint8

const (
	stateHello state = iota
	stateChallenge
	stateBusy // waiting for off-loop work
	stateRelay
	stateStop // answered a stop request; waiting for shutdown-server
	stateClosing
	stateClosed
	stateHandedOff // the client now belongs to another process
	// stateFinish: a disconnect waits for the packet the client is in
	// the middle of to end (close.go, finishFirst).
	stateFinish
)

var stateNames = [...]string{"hello", "challenge", "busy", "relay", "stop", "closing", "closed", "handed-off", "finishing"}

// String names the state as info and logs show it.
func (st state) String() string {
	if int(st) < len(stateNames) {
		return stateNames[st]
	}
	return "state-" + strconv.Itoa(int(st))
}

// closeGrace is how long a disconnected client gets to read the reason
// once everything queued for it is sent, as xpra's force_disconnect;
// closeDrain bounds how long a slow client may take to drain what was
// queued before the reason.
const (
	closeGrace = time.Second
	closeDrain = 10 * time.Second
)

// login is what the hello, the challenge and the authentication modules
// need and relaying does not: dropped (zeroed, so that reads still see
// empty values) when relaying starts or the client is handed over.
type login struct {
	caps      frame.Dict // the client's (latest) hello
	module    int        // next authentication module
	challenge *authn.Challenge
	identity  *authn.Identity
	pre       *TransportLogin // the transport's own login (SSH); nil for most
	// cipherCaps: the receive parameters an encrypted client was given
	// with its latest hello (aes.go).
	cipherCaps frame.Dict
	// rowKey: the user's password as the cipher's key, once looked up
	// (empty: none); aes.go.
	rowKey []byte
}

// Session is one client connection, from accept to close, and later its
// backend. All its methods run on the loop that owns the client.
type Session struct {
	ID     uint64
	cfg    *Config
	host   Host
	client Conn
	server Conn
	peer   string
	src    string // the peer's address without port ("unix" for local sockets)

	reader    frame.Reader
	claimed   string // the xpra version the proxy claims to this client (ClaimedVersion)
	state     state
	enc       frame.Encoding // the client's encoder, once its hello came
	closeSent bool           // a WebSocket client was sent its close frame
	helloSeen bool
	authed    bool // every module passed
	admitted  bool // Host.Admitted was called
	login          // the handshake's state; zero once relaying
	user      string
	display   string
	target    string
	pool      string // the pool the target came from
	link      *Link  // an adopted client's transport as the accepting process found it; nil otherwise
	// serverFramed: the backend link has a layer of this process's
	// (WebSocket framing, a TLS bridge): the session cannot be handed
	// to another process (state.go).
	serverFramed bool

	// The access record's (access.go): the transport's name, the
	// server's generation once connected, and why the session ends,
	// set once where it decides to (ending).
	transport  string
	serverGen  bridge.Gen
	closeWhy   CloseReason
	closePhase Phase
	recorded   bool // the access record was written
	closeText  string

	deadline time.Time // login deadline, or the close grace end
	drainBy  time.Time // closing: hard deadline for the queued bytes
	active   time.Time
	started  time.Time

	c2s, s2c *pipe

	// serverQueue: packets of the proxy's own for the server (pings,
	// acknowledgements of replaced video frames), sent at the next packet
	// boundary of the client→server stream.
	serverQueue []frame.Packet
	video       *videoState // proxy video, when this session has it
	ping        *pinger     // the proxy's own pings, when on
	aes         *clientAES  // an encrypted client link (aes.go)
	// finish: a disconnect waiting for the client's packet in progress
	// to end (stateFinish), and the bytes forwarded meanwhile.
	waiting     *pendingDisconnect
	finishBytes int
}

// videoState is a proxy-video session's frames at the encoder and how
// they ended. Nil for every other session.
type videoState struct {
	pending, encoded, passed int
}

// logger is made when there is something to log: a logger with the
// session's attributes costs more memory than an idle session should.
func (s *Session) logger() *slog.Logger {
	return s.cfg.Log.With("session", s.ID, "peer", s.peer)
}

// NewSession starts the handshake for a new client connection.
func NewSession(id uint64, cfg *Config, host Host, client Conn, now time.Time) *Session {
	s := &Session{ID: id, cfg: cfg, host: host, client: client, started: now, active: now}
	s.peer, s.src = "unknown", "unknown"
	if a := client.RemoteAddr(); a != nil {
		s.peer = a.Network() + " " + a.String()
		s.src = SourceOf(a)
	}
	s.transport = transportOf(client)
	s.deadline = now.Add(cfg.LoginTimeout)
	s.reader.MaxPacketSize = cfg.loginPacketSize()
	s.reader.NoChunks = true
	s.reader.MaxValues = LoginPacketValues
	return s
}

// SourceOf is an address without its port: a client's identity for the
// per-address limits ("unix" for local sockets).
func SourceOf(a net.Addr) string {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.IP.String()
	case *net.UnixAddr:
		return "unix"
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// Urgent reports whether the session needs the short sweep interval:
// backpressure to resume, or a close to finish.
func (s *Session) Urgent() bool {
	switch s.state {
	case stateClosing, stateFinish:
		return true
	case stateRelay:
		return s.c2s.paused || s.s2c.paused
	}
	return false
}

// Relaying reports whether the session passes packets through.
func (s *Session) Relaying() bool { return s.state == stateRelay }

// Reading reports whether the session still consumes what its sockets
// deliver: relaying, or finishing the packet in progress before its
// disconnect (a paused socket must then be read again).
func (s *Session) Reading() bool { return s.state == stateRelay || s.state == stateFinish }

// MaxBuffer is the bytes the session may hold queued for a slow peer
// (--max-session-buffer; 0: no limit): what a transport kept outside the
// session (a splice) may hold too.
func (s *Session) MaxBuffer() int { return s.cfg.MaxSessionBuffer }

// StallTimeout is how long a peer may read nothing of what is queued for
// it (--stall-timeout; 0: no limit): a splice's bound on a paused
// direction as well.
func (s *Session) StallTimeout() time.Duration { return s.cfg.StallTimeout }

// Closed reports whether the session is over.
func (s *Session) Closed() bool { return s.state == stateClosed }

// LoggedIn reports whether the client passed authentication.
func (s *Session) LoggedIn() bool { return s.authed }

// admit tells the host, once, that the client logged in.
func (s *Session) admit() {
	if !s.admitted {
		s.admitted = true
		s.host.Admitted(s)
	}
}

// heldLimit is how many bytes the client may have waiting before the
// relay starts: one login packet before authentication, ConnectBuffer
// while its backend is being connected.
func (s *Session) heldLimit() int {
	if s.authed {
		return s.cfg.connectBuffer()
	}
	return s.cfg.loginPacketSize() + frame.HeaderSize
}

// ClientTraffic handles bytes from the client.
func (s *Session) ClientTraffic(now time.Time) {
	s.active = now
	switch s.state {
	case stateHello, stateChallenge, stateBusy, stateStop:
		// gnet reads whatever comes; before the relay nothing the
		// client says is needed beyond one packet at a time.
		if n := s.client.InboundBuffered(); n > s.heldLimit() {
			s.logger().Info("too much data before the session started", "user", s.logUser(), "bytes", n)
			s.client.Discard(n)
			s.disconnect(CloseClientError, "protocol error", fmt.Sprintf("more than %d bytes sent before the session started", s.heldLimit()))
			return
		}
	}
	switch s.state {
	case stateHello, stateChallenge:
		s.readHandshake(now)
	case stateRelay:
		s.drained()
		if s.server.InboundBuffered() > 0 {
			s.pump(s.s2c) // what waited for this client to drain
		}
		if s.state == stateRelay {
			s.pump(s.c2s)
		}
	case stateStop:
		s.readStop()
	case stateBusy:
		// Keep the bytes: the client has nothing to say before the
		// server's hello, and whatever it says waits for the relay.
	default:
		if n := s.client.InboundBuffered(); n > 0 {
			s.client.Discard(n)
		}
	}
}

// ServerTraffic handles bytes from the backend.
func (s *Session) ServerTraffic(now time.Time) {
	s.active = now
	if s.state == stateRelay {
		s.drained()
		if s.client.InboundBuffered() > 0 {
			s.pump(s.c2s) // what waited for this server to drain
		}
		if s.state == stateRelay {
			s.pump(s.s2c)
		}
	} else if s.state == stateFinish {
		s.continueFinish(now)
	} else if s.server != nil {
		s.server.Discard(s.server.InboundBuffered())
	}
}

// offLoop is every piece of off-loop work a session does: the session
// waits (stateBusy) while work runs in the host's pool of its kind, then
// runs on the loop only if the session still waits for it — a timeout, a
// close or a stop meanwhile wins, and abandoned (if set) cleans up what
// work left. work touches only what it is given and its own results. A
// full queue ends the session with a reason instead of piling up
// goroutines.
func (s *Session) offLoop(kind WorkKind, work, then, abandoned func()) {
	s.state = stateBusy
	var panicked any
	guarded := func() {
		// A module, a router or a session start that panics ends this
		// login with a reason, never the process.
		defer func() {
			if r := recover(); r != nil {
				panicked = r
				s.cfg.Log.Error("panic in off-loop work", "session", s.ID, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			}
		}()
		work()
	}
	done := func() {
		if s.state != stateBusy {
			if abandoned != nil && panicked == nil {
				abandoned()
			}
			return
		}
		if panicked != nil {
			s.outcome("error")
			s.disconnect(CloseInternal, "server error", "internal error, see the proxy's log")
			return
		}
		then()
	}
	if !s.host.Go(kind, guarded, done) {
		s.outcome("busy")
		s.logger().Warn("off-loop work queue full", "user", s.logUser(), "kind", int(kind))
		s.disconnect(CloseBusy, "server error", "the proxy is too busy, try again later")
	}
}

// logUser is the username as a log line may show it.
func (s *Session) logUser() string { return logsafe.String(s.user) }

// source is the client's address without its port: what login
// throttling and the per-address limits count.
func (s *Session) source() string { return s.src }

// outcome counts a handshake result for the metrics.
func (s *Session) outcome(result string) {
	s.host.CountHandshake(result)
}

func (s *Session) pump(p *pipe) {
	if err := p.pump(); err != nil {
		s.relayError(p, err)
		return
	}
	if p.toServer && len(s.serverQueue) > 0 {
		s.flushServerQueue()
	}
	if p.paused {
		s.host.Watch(s)
	}
	// A source the reactor could not stop reading yet (flow.go) still
	// grows: enforce the limit on every read, not only at the next sweep.
	if p.paused && s.state == stateRelay {
		s.overLimit()
	}
}

// TrafficDelta returns what was relayed each way since its last call:
// the loop adds it to monotonic totals for the metrics.
func (s *Session) TrafficDelta() (c2s, s2c TrafficTotals) {
	for i, p := range []*pipe{s.c2s, s.s2c} {
		if p == nil {
			continue
		}
		d := TrafficTotals{Bytes: p.Bytes - p.reported.Bytes, Packets: p.Packets - p.reported.Packets}
		p.reported = TrafficTotals{Bytes: p.Bytes, Packets: p.Packets}
		if i == 0 {
			c2s = d
		} else {
			s2c = d
		}
	}
	return c2s, s2c
}

// TrafficTotals is bytes and packets in one direction.
type TrafficTotals struct{ Bytes, Packets int64 }

// Plus adds two totals.
func (t TrafficTotals) Plus(o TrafficTotals) TrafficTotals {
	return TrafficTotals{t.Bytes + o.Bytes, t.Packets + o.Packets}
}

// Traffic is a TrafficTotals shared between a loop and readers.
type Traffic struct{ bytes, packets atomic.Int64 }

// Add accumulates t.
func (a *Traffic) Add(t TrafficTotals) {
	a.bytes.Add(t.Bytes)
	a.packets.Add(t.Packets)
}

// Store replaces the totals.
func (a *Traffic) Store(t TrafficTotals) {
	a.bytes.Store(t.Bytes)
	a.packets.Store(t.Packets)
}

// Load reads the totals.
func (a *Traffic) Load() TrafficTotals {
	return TrafficTotals{a.bytes.Load(), a.packets.Load()}
}
