package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/gpu"
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
	// Enroll moves the backend's socket onto the session's loop; the
	// reactor then calls ServerOpened.
	Enroll(s *Session, b *Backend) error
	// Watch asks for Sweep at the short interval while the session
	// Urgent(): a paused pipe or a closing connection. Other sessions are
	// swept at the long interval, which bounds idle CPU.
	Watch(s *Session)
	// Post runs fn on the session's loop, from any goroutine (encoder
	// results).
	Post(fn func())
	// Detach closes the loop's client connection at once, without
	// writing or shutting anything down: the socket lives on in another
	// process. The session then counts as closed.
	Detach(c Conn)
}

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
}

// Config is shared by the sessions of one listener.
type Config struct {
	// Modules authenticate, in order; all must pass.
	Modules []authn.Module
	// Local session discovery (modules without explicit displays).
	SocketDirs []string
	Hostname   string
	OwnDisplay string
	UID        int
	// Limits.
	LoginTimeout     time.Duration // hello and authentication (xpra: 31 s)
	ChallengeTimeout time.Duration // after a challenge (xpra: 120 s)
	ConnectTimeout   time.Duration // backend connect and handshake (xpra: 20 s)
	IdleTimeout      time.Duration // no traffic either way while relaying; 0: never
	MaxPacketSize    int           // per frame, handshake and inspected packets
	MaxSessionBuffer int           // bytes buffered in both directions before the session ends
	// Encrypted marks TLS or local links, where xor digests are allowed.
	Encrypted bool
	Log       *slog.Logger
	// ServerInfo, when set, adds the proxy's own figures (sessions,
	// memory) to the info a session reports.
	ServerInfo func() frame.Dict
	// Control answers info and stop requests about the whole proxy and
	// its connections; nil: only this session's info.
	Control Control
	// Local marks unix listeners: only they may stop the proxy, as xpra's
	// STOP_PROXY_SOCKET_TYPES.
	Local bool
	// HandOff, when set (the proxy runs as root), moves each logged-in
	// client to a worker running as the target account instead of
	// relaying here. UserSocketDirs are then the socket directory
	// templates ($UID, ~) expanded for that account to find its sessions.
	HandOff        HandOffFunc
	UserSocketDirs []string
	// OnHandshake, when set, counts handshake outcomes (metrics).
	OnHandshake func(result string)
	// Video, when set, is the encoder pool of proxy video: servers are
	// offered it and their raw-RGB draws are compressed here (docs/gpu.md).
	Video *gpu.Pool
	// Pools are the target pools that `pool:NAME` displays name.
	Pools Pools
	// PingInterval is how often the proxy pings both peers itself (xpra's
	// proxy: 5 s); 0: never.
	PingInterval time.Duration
	// StartSessions lets clients start new sessions through the proxy
	// (xpra's --proxy-start-sessions), at most MaxStartedSessions live
	// sessions per user.
	StartSessions      bool
	MaxStartedSessions int
	// StartAsProxyUser lets a proxy that is not root start sessions as
	// its own account (which can read its user database and keys): off
	// unless the operator says so.
	StartAsProxyUser bool
	// StartCommands are the commands a client may ask a new session to
	// run (start, start-child, ... compared whole; "*": any); StartEnv
	// the environment variables it may set. Empty: none.
	StartCommands, StartEnv []string
	// StartXpra are the xpra programs that may start sessions, one per
	// generation (--proxy-start-xpra); nil: "xpra" on PATH.
	StartXpra *XpraPrograms

	// LoginPacketSize bounds each packet before login (a real hello is
	// under 100 KiB); 0: DefaultLoginPacketSize. Raw chunks are refused
	// before login.
	LoginPacketSize int
	// ConnectBuffer bounds the bytes a logged-in client may send while
	// its backend is being connected; 0: DefaultConnectBuffer.
	ConnectBuffer int
	// Throttle, when set, refuses logins from sources and usernames with
	// recent failures.
	Throttle *Throttle
	// Connects, when set, bounds the dials in progress to each target.
	Connects *ConnectLimiter
	// Generations, when set, remembers which xpra generation each target
	// is, so that a client that cannot use one is told why without a
	// dial and pools prefer the members it can use.
	Generations *Generations
}

// nobodyUID is Debian's nobody, never given sessions of its own.
const nobodyUID = 65534

// Defaults of the pre-login bounds.
const (
	DefaultLoginPacketSize = 256 << 10
	DefaultConnectBuffer   = 1 << 20
	// MaxUsernameLength bounds a hello's username (xpra's are short).
	MaxUsernameLength = 256
)

func (c *Config) loginPacketSize() int {
	if c.LoginPacketSize > 0 {
		return min(c.LoginPacketSize, max(c.MaxPacketSize, 1))
	}
	if c.MaxPacketSize > 0 {
		return min(DefaultLoginPacketSize, c.MaxPacketSize)
	}
	return DefaultLoginPacketSize
}

func (c *Config) connectBuffer() int {
	if c.ConnectBuffer > 0 {
		return c.ConnectBuffer
	}
	return DefaultConnectBuffer
}

// Candidate is a display and its address; a pool gives several, tried in
// order until one connects.
type Candidate struct {
	Display string       `json:"display"`
	Target  authn.Target `json:"target"`
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
)

// closeGrace is how long a disconnected client gets to read the reason
// once everything queued for it is sent, as xpra's force_disconnect;
// closeDrain bounds how long a slow client may take to drain what was
// queued before the reason.
const (
	closeGrace = time.Second
	closeDrain = 10 * time.Second
)

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

	state     state
	reader    frame.Reader
	enc       frame.Encoding // the client's encoder, once its hello came
	claimed   string         // the xpra version the proxy claims to this client (ClaimedVersion)
	closeSent bool           // a WebSocket client was sent its close frame
	helloSeen bool
	authed    bool       // every module passed
	admitted  bool       // Host.Admitted was called
	caps      frame.Dict // the client's (latest) hello
	module    int        // next authentication module
	challenge *authn.Challenge
	identity  *authn.Identity
	user      string
	display   string
	target    string

	deadline time.Time // login deadline, or the close grace end
	drainBy  time.Time // closing: hard deadline for the queued bytes
	active   time.Time
	started  time.Time

	c2s, s2c *pipe

	// Proxy video: frames at the encoder, how they ended, and packets of
	// the proxy's own for the server (acknowledgements of replaced frames).
	videoPending, videoEncoded, videoPassed int
	serverQueue                             []frame.Packet

	ping *pinger // the proxy's own pings, when on
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
	s.deadline = now.Add(cfg.LoginTimeout)
	s.reader.MaxPacketSize = cfg.loginPacketSize()
	s.reader.NoChunks = true
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
	case stateClosing:
		return true
	case stateRelay:
		return s.c2s.paused || s.s2c.paused
	}
	return false
}

// Relaying reports whether the session passes packets through.
func (s *Session) Relaying() bool { return s.state == stateRelay }

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
			s.disconnect("protocol error", fmt.Sprintf("more than %d bytes sent before the session started", s.heldLimit()))
			return
		}
	}
	switch s.state {
	case stateHello, stateChallenge:
		s.readHandshake(now)
	case stateRelay:
		s.pump(s.c2s)
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
		s.pump(s.s2c)
	} else if s.server != nil {
		s.server.Discard(s.server.InboundBuffered())
	}
}

func (s *Session) readHandshake(now time.Time) {
	for s.state == stateHello || s.state == stateChallenge {
		p, ok := s.nextPacket()
		if !ok {
			return
		}
		if p == nil {
			continue
		}
		if p.Type() != "hello" {
			s.disconnect("protocol error", fmt.Sprintf("unexpected %s before authentication", p))
			return
		}
		s.onHello(p, now)
	}
}

// nextPacket parses the client's next packet before the relay starts (a
// nil packet: a chunk of one). ok is false when more bytes are needed or
// the session ended on bad input.
func (s *Session) nextPacket() (frame.Packet, bool) {
	n := s.client.InboundBuffered()
	if n == 0 {
		return nil, false
	}
	buf, err := s.client.Peek(n)
	if err != nil {
		return nil, false
	}
	if !s.helloSeen && buf[0] != frame.Magic {
		s.garbage(buf)
		return nil, false
	}
	p, used, err := s.reader.Next(buf)
	if errors.Is(err, frame.ErrShortBuffer) {
		return nil, false
	}
	if err != nil {
		s.protocolError(err)
		return nil, false
	}
	s.client.Discard(used)
	return p, true
}

// garbage answers a non-xpra client the way xpra does before any hello:
// a plain-text line, no header.
func (s *Session) garbage(buf []byte) {
	guess := fmt.Sprintf("character 0x%02x, not an xpra client?", buf[0])
	switch {
	case len(buf) >= 4 && string(buf[:4]) == "GET ":
		guess = "HTTP GET request"
	case buf[0] == 0x16:
		guess = "SSL packet?"
	case len(buf) >= 4 && string(buf[:4]) == "SSH-":
		guess = "SSH packet"
	}
	s.logger().Info("invalid first bytes", "guess", guess)
	s.client.Discard(len(buf))
	s.client.Write([]byte("disconnect: invalid packet format, " + guess + "\n"))
	s.beginClose()
}

func (s *Session) protocolError(err error) {
	s.logger().Info("invalid packet from client", "err", err)
	msg := err.Error()
	var he *frame.HeaderError
	if errors.As(err, &he) {
		msg = he.Reason
	}
	if !s.helloSeen {
		s.client.Write([]byte("disconnect: invalid packet format, " + strings.TrimPrefix(msg, "frame: ") + "\n"))
		s.beginClose()
		return
	}
	s.disconnect("protocol error", strings.TrimPrefix(msg, "frame: "))
}

// onHello handles the client's hello: requests that need no login,
// then one authentication round per module.
func (s *Session) onHello(p frame.Packet, now time.Time) {
	var caps frame.Dict
	ok := len(p) >= 2
	if ok {
		caps, ok = p[1].(frame.Dict)
	}
	if !ok {
		s.disconnect("protocol error", "invalid hello packet")
		return
	}
	s.enc = s.reader.Header().Flags.Encoding()
	s.helloSeen = true
	s.claimed = ClaimedVersion(caps)
	if _, ok := caps.Text("version"); !ok {
		s.disconnect("version error", "remote version not available!")
		return
	}
	if request(caps) == "version" {
		s.send(frame.Packet{"hello", frame.NewDict("version", s.claimed, "xpraproxy.version", Version)})
		s.beginClose()
		return
	}
	s.caps = caps
	if s.user == "" {
		s.user, _ = caps.Text("username")
		if len(s.user) > MaxUsernameLength {
			s.disconnect("authentication failed", "invalid username")
			return
		}
	}
	if ok, wait := s.cfg.Throttle.Allow(s.source(), s.user); !ok {
		s.outcome("throttled")
		s.disconnect("authentication failed", fmt.Sprintf("too many failed logins, try again in %d seconds", int(wait.Seconds())+1))
		return
	}
	if s.state == stateChallenge {
		s.verifyRound()
		return
	}
	s.nextRound()
}

// goWork runs work in the host's pool of its kind; a full queue ends the
// session with a reason instead of piling up goroutines.
func (s *Session) goWork(kind WorkKind, work, done func()) {
	if !s.host.Go(kind, work, done) {
		s.outcome("busy")
		s.logger().Warn("off-loop work queue full", "user", s.logUser(), "kind", int(kind))
		s.disconnect("server error", "the proxy is too busy, try again later")
	}
}

// logUser is the username as a log line may show it.
func (s *Session) logUser() string { return logsafe.String(s.user) }

// source is the client's address without its port: what login
// throttling and the per-address limits count.
func (s *Session) source() string { return s.src }

// request returns the hello's one-shot request: "info", "version", ...
func request(caps frame.Dict) string {
	if r, ok := caps.Text("request"); ok {
		return r
	}
	for _, r := range []string{"version", "info", "id", "connect_test", "stop"} {
		if v, _ := caps.Bool(r + "_request"); v {
			return r
		}
	}
	return ""
}

// nextRound authenticates with the next module: a challenge first if it
// needs one, then the module's decision off the loop.
func (s *Session) nextRound() {
	if len(s.cfg.Modules) == 0 {
		// xpra's proxy refuses to run without authentication.
		s.disconnect("session not found error", "no sessions found")
		return
	}
	if s.module >= len(s.cfg.Modules) {
		s.authenticated()
		return
	}
	m := s.cfg.Modules[s.module]
	if m.Challenge() {
		s.sendChallenge()
		return
	}
	s.authenticate(m, nil, nil)
}

func (s *Session) sendChallenge() {
	var ch *authn.Challenge
	var err error
	if authn.NeedsCleartext(s.cfg.Modules[s.module]) {
		ch, err = authn.NewCleartextChallenge(s.caps.Texts("digest"), s.caps.Texts("salt-digest"))
	} else {
		ch, err = authn.NewChallenge(s.caps.Texts("digest"), s.caps.Texts("salt-digest"), s.cfg.Encrypted)
	}
	if err != nil {
		s.logger().Info("cannot challenge the client", "err", err)
		s.disconnect("authentication failed", "no supported digest")
		return
	}
	s.challenge = ch
	s.state = stateChallenge
	s.deadline = time.Now().Add(s.cfg.ChallengeTimeout)
	s.send(frame.Packet{"challenge", ch.ServerSalt, "", string(ch.Digest), string(ch.SaltDigest), "password"})
}

func (s *Session) verifyRound() {
	resp, _ := s.caps.Get("challenge_response")
	salt, _ := s.caps.Get("challenge_client_salt")
	// Text values become bytes as xpra's strtobytes makes them (latin-1):
	// the HTML5 client sends its salt as text.
	r, _ := frame.AsBytes(resp)
	cs, _ := frame.AsBytes(salt)
	verify := s.challenge.Verifier(r, cs)
	password, _ := s.challenge.Cleartext(r, cs)
	s.challenge = nil // a salt is good for one answer only
	if verify == nil {
		s.cfg.Throttle.Failed(s.source(), s.user)
		s.logger().Info("authentication failed", "user", s.logUser(), "why", "no usable challenge response")
		s.disconnect("authentication failed")
		return
	}
	s.authenticate(s.cfg.Modules[s.module], verify, password)
}

// authenticate runs module m off the loop.
func (s *Session) authenticate(m authn.Module, verify func([]byte) bool, password []byte) {
	s.state = stateBusy
	req := authn.Request{Username: s.user, Peer: s.peer, Verify: verify, Password: password, Conn: s.client}
	var (
		id  *authn.Identity
		err error
	)
	s.goWork(WorkAuth, func() { id, err = m.Authenticate(req) }, func() {
		if s.state != stateBusy {
			return
		}
		if err != nil {
			if errors.Is(err, authn.ErrAuthFailed) {
				s.cfg.Throttle.Failed(s.source(), s.user)
				s.outcome("auth-failed")
				s.logger().Info("authentication failed", "user", s.logUser(), "module", m.Name(), "why", authn.Why(err))
				if why := authn.Why(err); why != "" {
					s.disconnect("authentication failed", why)
				} else {
					s.disconnect("authentication failed")
				}
			} else {
				s.outcome("auth-error")
				s.logger().Warn("authentication error", "user", s.logUser(), "module", m.Name(), "err", err)
				s.disconnect("authentication error", "cannot access sessions")
			}
			return
		}
		// The first module that lists sessions decides them (xpra's
		// get_sessions order).
		if s.identity == nil || (!s.identity.Explicit && id.Explicit) {
			s.identity = id
		}
		s.module++
		s.state = stateHello
		s.nextRound()
	})
}

// authenticated: answer requests, else find the session and connect.
func (s *Session) authenticated() {
	s.authed = true
	s.cfg.Throttle.Succeeded(s.source())
	s.reader.MaxPacketSize = s.cfg.MaxPacketSize
	s.logger().Info("authenticated", "user", s.logUser())
	switch r := request(s.caps); r {
	case "", "connect_test":
	case "info", "stop", "id":
		s.answer(r)
		return
	default:
		s.disconnect("permission error", "invalid request: "+r)
		return
	}
	s.state = stateBusy
	requested := requestedDisplay(s.caps)
	var (
		err   error
		acct  authn.Account
		cands []Candidate
		pool  *Pool
		start *StartRequest
	)
	id := s.identity
	root := s.cfg.HandOff != nil
	sns, wantsNew := s.caps.Dict("start-new-session")
	clientEnc := PeerEncoders(s.caps)
	s.goWork(WorkDial, func() {
		var aerr error
		acct, aerr = authn.ResolveAccount(id)
		switch {
		case aerr != nil && root:
			err = &authn.SessionError{Reason: "authentication error", Message: "cannot find the account to run as"}
			return
		case root && acct.Root():
			err = &authn.SessionError{Reason: "authentication error", Message: "cannot run proxy instances as root"}
			return
		}
		if wantsNew {
			start, err = s.startRequest(sns, acct, root, id.SessionOptions, clientEnc)
			return
		}
		cands, pool, err = s.chooseTarget(id, requested, acct, root)
		var se *authn.SessionError
		if errors.As(err, &se) && se.Message == "no displays found" && s.cfg.StartSessions {
			// xpra's proxy starts a session for a user who has none.
			start, err = s.startRequest(nil, acct, root, id.SessionOptions, clientEnc)
		}
	}, func() {
		if s.state != stateBusy {
			return
		}
		if err != nil {
			s.connectFailed(err)
			return
		}
		if root {
			s.handOff(cands, start, acct, id.SessionOptions)
			return
		}
		// As in xpra, a proxy that is not root relays (and starts
		// sessions) as itself.
		if start != nil {
			s.startAndConnect(start, id.SessionOptions)
			return
		}
		s.connect(cands, pool, id.SessionOptions)
	})
}

// startRequest validates a start-new-session (nil: a plain new session)
// against the configuration and the user's limit; off the loop.
func (s *Session) startRequest(sns frame.Dict, acct authn.Account, root bool, opts []authn.Option, client Encoders) (*StartRequest, error) {
	if !s.cfg.StartSessions {
		return nil, &authn.SessionError{Reason: "session not found error", Message: "starting new sessions is disabled on this proxy"}
	}
	switch {
	case !root && !s.cfg.StartAsProxyUser:
		// The proxy's own account can read its user database and keys:
		// a user's commands never run as it unless the operator says so.
		return nil, &authn.SessionError{Reason: "session not found error",
			Message: "this proxy does not start sessions: it does not run as root (see --proxy-start-as-proxy-user)"}
	case root && (acct.Name == "" || acct.UID == nobodyUID):
		// nobody is shared by every unmapped user.
		return nil, &authn.SessionError{Reason: "session not found error",
			Message: "this user has no local account to start a session as"}
	}
	r, ignored, err := ParseStartRequest(sns, StartPolicy{Commands: s.cfg.StartCommands, Env: s.cfg.StartEnv})
	if err != nil {
		return nil, &authn.SessionError{Reason: "session not found error", Message: err.Error()}
	}
	// The xpra that starts it: of the client's generation, from the
	// user's row (start-xpra=PATH[:PATH]) or the proxy's list.
	var rowPaths []string
	for _, o := range opts {
		if o.Key == "start-xpra" {
			rowPaths = strings.FieldsFunc(o.Value, func(r rune) bool { return r == ':' || r == ';' })
		}
	}
	prog, enc, err := s.cfg.StartXpra.Choose(rowPaths, client)
	if err != nil {
		return nil, &authn.SessionError{Reason: "session not found error", Message: err.Error()}
	}
	if r.Mode, err = Subcommand(r.Mode, enc); err != nil {
		return nil, &authn.SessionError{Reason: "session not found error", Message: err.Error()}
	}
	r.Xpra = prog
	if len(ignored) > 0 {
		s.logger().Warn("start-new-session options ignored", "user", s.logUser(), "options", strings.Join(ignored, ","))
	}
	if max := s.cfg.MaxStartedSessions; max > 0 {
		dirs, uid := s.userDirs(acct, root)
		if n := len(authn.LocalSessions(dirs, s.cfg.Hostname, uid, time.Second)); n >= max {
			return nil, &authn.SessionError{Reason: "session not found error",
				Message: fmt.Sprintf("too many sessions: %d running, the limit is %d", n, max)}
		}
	}
	return r, nil
}

// startAndConnect starts the new session as this process's user, then
// connects to it.
func (s *Session) startAndConnect(r *StartRequest, opts []authn.Option) {
	s.state = stateBusy
	// `xpra start` takes seconds: the login deadline moves.
	s.deadline = time.Now().Add(3*s.cfg.ConnectTimeout + time.Second)
	var (
		c   Candidate
		err error
	)
	dirs, _ := s.userDirs(authn.Account{UID: os.Getuid()}, false)
	s.logger().Info("starting a new session", "user", s.logUser(), "mode", r.Mode, "args", logsafe.String(strings.Join(r.Args, " ")))
	s.goWork(WorkDial, func() {
		if len(dirs) == 0 {
			err = &BackendError{Reason: "server error", Message: "cannot start a new session: no socket directory"}
			return
		}
		os.MkdirAll(dirs[0], 0o700)
		c, err = StartSession(r, dirs[0], s.cfg.Hostname, 2*s.cfg.ConnectTimeout)
	}, func() {
		if s.state != stateBusy {
			return
		}
		if err != nil {
			s.connectFailed(err)
			return
		}
		s.logger().Info("new session started", "user", s.logUser(), "display", c.Display)
		s.connect([]Candidate{c}, nil, opts)
	})
}

// connect dials the target off the loop, then moves the logged-in
// backend onto the session's loop.
func (s *Session) connect(cands []Candidate, pool *Pool, opts []authn.Option) {
	s.state = stateBusy
	var (
		b        *Backend
		err      error
		link     *LinkOptions
		warnings []string
		display  string
		target   authn.Target
	)
	caps, enc := s.caps, s.enc
	clientEnc := PeerEncoders(caps)
	cands = orderByGeneration(cands, clientEnc, s.cfg.Generations)
	s.goWork(WorkDial, func() {
		for i, c := range cands {
			display, target = c.Display, c.Target
			key := target.Network + ":" + target.Address
			if known := s.cfg.Generations.Of(key); !clientEnc.Compatible(known) {
				// Known from an earlier hello or refusal: no dial.
				err = mismatchError(clientEnc, known, "")
				if i < len(cands)-1 {
					continue
				}
				break
			}
			var hello frame.Dict
			hello, link, warnings = ServerHello(caps, target, opts)
			if s.cfg.Video != nil && !link.Uncompressed() && clientDecodes(caps, s.cfg.Video.Backend().Encodings()) {
				for _, kv := range VideoCaps(s.cfg.Video.Backend()) {
					k, _ := frame.AsText(kv.Key)
					hello.Set(k, kv.Value)
				}
			}
			pw := target.Password
			if pw == "" {
				pw = link.Password
			}
			if !s.cfg.Connects.Acquire(key) {
				err = errTargetBusy
				break
			}
			b, err = Dial(DialConfig{Target: target, Network: target.Network, Address: target.Address,
				Hello: hello, Encoding: enc, Password: pw, Timeout: s.cfg.ConnectTimeout, MaxPacketSize: frame.AbsMaxPacketSize,
				Link: link})
			s.cfg.Connects.Release(key)
			var be *BackendError
			if err == nil {
				s.cfg.Generations.Learn(key, PeerEncoders(b.Hello))
			} else if errors.As(err, &be) && be.Refused != "" {
				if server := RefusalEncoders(be.Refused, clientEnc); server != 0 && !clientEnc.Compatible(server) {
					s.cfg.Generations.Learn(key, server)
					err = mismatchError(clientEnc, server, be.Refused)
					if i < len(cands)-1 {
						s.logger().Info("target of another xpra generation, trying the next in its pool", "target", target.String())
						continue
					}
					break
				}
			}
			if err == nil || i == len(cands)-1 || !errors.As(err, &be) || be.Message != "failed to connect to display" {
				break
			}
			// A pool member that does not answer: the next one.
			next := cands[i+1].Display
			if pool != nil {
				pool.Failed(s.ID, c.Display, next)
			}
			s.logger().Warn("target unreachable, trying the next in its pool", "target", target.String(), "next", authn.RedactDisplay(next))
		}
	}, func() {
		for _, w := range warnings {
			s.logger().Warn(w, "user", s.logUser())
		}
		if s.state != stateBusy {
			if b != nil {
				b.Conn.Close()
			}
			return
		}
		if errors.Is(err, errTargetBusy) {
			s.retryConnect(cands, pool, opts)
			return
		}
		if err != nil {
			s.connectFailed(err)
			return
		}
		s.display, s.target = authn.RedactDisplay(display), target.String()
		s.c2s = &pipe{s: s, name: "client→server", link: link, toServer: true}
		s.s2c = &pipe{s: s, name: "server→client", link: link}
		if err := s.host.Enroll(s, b); err != nil {
			b.Conn.Close()
			s.connectFailed(&BackendError{Reason: "server error", Message: "cannot relay the connection", Err: err})
		}
	})
}

// errTargetBusy: the target has as many dials in progress as the
// ConnectLimiter allows.
var errTargetBusy = &BackendError{Reason: "server error", Message: "too many connections in progress to this server, try again later"}

// connectRetry is how long a login waits before trying a busy target
// again.
const connectRetry = 25 * time.Millisecond

// retryConnect tries the dial again shortly, holding no worker while it
// waits: a burst of logins to one server queues, and a server that never
// answers delays only the logins to it. Past the login deadline the
// client is told why.
func (s *Session) retryConnect(cands []Candidate, pool *Pool, opts []authn.Option) {
	if time.Now().Add(connectRetry).After(s.deadline) {
		s.connectFailed(errTargetBusy)
		return
	}
	time.AfterFunc(connectRetry, func() {
		s.host.Post(func() {
			if s.state == stateBusy {
				s.connect(cands, pool, opts)
			}
		})
	})
}

// answer replies to a request-only hello (after authentication): the
// proxy's info, its id, or a stop of the proxy or of one connection.
// Control calls visit every loop, so they run off this one.
func (s *Session) answer(r string) {
	s.outcome("request")
	instance, _ := s.caps.Text("proxy-instance")
	var id uint64
	if instance != "" {
		n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(instance, ":"), "proxy-"), 10, 64)
		if err != nil || n == 0 || s.cfg.Control == nil {
			s.disconnect("session not found error", "no proxy instance "+instance)
			return
		}
		id = n
	}
	ctl := s.cfg.Control
	if !s.cfg.Local {
		// Remote users see their own connection only, never the proxy's
		// other users.
		ctl = nil
		if id != 0 {
			s.disconnect("permission error", "proxy instances can only be queried from a local socket")
			return
		}
	}
	switch {
	case r == "id":
		s.send(frame.Packet{"hello", frame.NewDict("session-type", "xpraproxy", "platform", "linux", "display", s.cfg.OwnDisplay)})
		s.beginClose()
		return
	case r == "info" && ctl == nil:
		s.send(frame.Packet{"hello", s.clientInfo()})
		s.beginClose()
		return
	case r == "stop" && (!s.cfg.Local || ctl == nil):
		// xpra's STOP_PROXY_SOCKET_TYPES: local sockets only.
		s.disconnect("permission error", "cannot stop proxy server from a remote connection")
		return
	case r == "stop" && id == 0:
		// xpra's protocol: a hello back, then the client's
		// shutdown-server packet.
		s.send(frame.Packet{"hello", frame.NewDict("version", s.claimed, "client-shutdown", true,
			"session-type", "xpraproxy", "display", s.cfg.OwnDisplay)})
		s.state = stateStop
		s.deadline = time.Now().Add(s.cfg.LoginTimeout)
		return
	}
	s.state = stateBusy
	var (
		info frame.Dict
		ok   bool
	)
	s.goWork(WorkAuth, func() {
		switch {
		case r == "info" && id != 0:
			info, ok = ctl.SessionInfo(id)
		case r == "info":
			info, ok = ctl.Info(), true
		case r == "stop":
			if ok = ctl.StopSession(id); ok {
				info = frame.NewDict("version", s.claimed, "stopped", "proxy-"+strconv.FormatUint(id, 10))
			}
		}
	}, func() {
		if s.state != stateBusy {
			return
		}
		if !ok {
			s.disconnect("session not found error", "no proxy instance "+instance)
			return
		}
		if r == "stop" {
			s.logger().Info("proxy instance stopped by request", "instance", instance)
		}
		s.send(frame.Packet{"hello", info})
		s.beginClose()
	})
}

// readStop waits for the shutdown-server packet of `xpra stop`.
func (s *Session) readStop() {
	for s.state == stateStop {
		p, ok := s.nextPacket()
		if !ok {
			return
		}
		switch p.Type() {
		case "": // a chunk of a packet
		case "shutdown-server":
			s.logger().Warn("proxy server shutdown requested")
			s.disconnect("server shutdown", "proxy server stopped by request")
			s.cfg.Control.Shutdown()
		case "disconnect":
			s.beginClose()
		default:
			s.disconnect("protocol error", fmt.Sprintf("unexpected %s", p.Type()))
		}
	}
}

// outcome counts a handshake result for the metrics.
func (s *Session) outcome(result string) {
	if s.cfg.OnHandshake != nil {
		s.cfg.OnHandshake(result)
	}
}

// chooseTarget runs off the loop: the display, then its address.
// As root, local sessions are those of the account the relay runs as, in
// the socket directories expanded for it (xpra's get_sessions with
// check_uid). A `pool:NAME` display gives the pool's live targets in
// policy order.
func (s *Session) chooseTarget(id *authn.Identity, requested string, acct authn.Account, root bool) ([]Candidate, *Pool, error) {
	candidates := id.Displays
	dirs, uid := s.userDirs(acct, root)
	if !id.Explicit {
		for _, ls := range authn.LocalSessions(dirs, s.cfg.Hostname, uid, 2*time.Second) {
			candidates = append(candidates, ls.Display)
		}
	}
	display, err := authn.ChooseDisplay(candidates, requested, s.cfg.OwnDisplay)
	if err != nil {
		return nil, nil, err
	}
	if name, ok := strings.CutPrefix(display, PoolPrefix); ok {
		pool := s.cfg.Pools[name]
		if pool == nil {
			return nil, nil, &authn.SessionError{Reason: "session not found error", Message: "no target pool " + name}
		}
		displays, targets, err := pool.Pick(s.ID)
		if err != nil {
			return nil, nil, err
		}
		out := make([]Candidate, len(displays))
		for i := range displays {
			out[i] = Candidate{Display: displays[i], Target: targets[i]}
		}
		return out, pool, nil
	}
	t, err := authn.ParseTarget(display)
	if err != nil {
		return nil, nil, &authn.SessionError{Reason: "session not found error", Message: "invalid display string"}
	}
	if t.Network == "unix" && t.Address == "" {
		if t.Address, err = authn.FindSocket(dirs, s.cfg.Hostname, t.Display); err != nil {
			return nil, nil, err
		}
	}
	return []Candidate{{Display: display, Target: t}}, nil, nil
}

// userDirs are the socket directories of the account (expanded for it
// when the proxy is root) and the uid whose sockets count.
func (s *Session) userDirs(acct authn.Account, root bool) ([]string, int) {
	if !root {
		return s.cfg.SocketDirs, s.cfg.UID
	}
	dirs := s.cfg.UserSocketDirs
	if u, err := user.LookupId(strconv.Itoa(acct.UID)); err == nil {
		dirs = make([]string, len(s.cfg.UserSocketDirs))
		for i, d := range s.cfg.UserSocketDirs {
			dirs[i] = authn.ExpandDir(d, u)
		}
	}
	return dirs, acct.UID
}

func (s *Session) connectFailed(err error) {
	var se *authn.SessionError
	var be *BackendError
	switch {
	case errors.As(err, &se):
		s.outcome("no-session")
		s.logger().Info("no session", "user", s.logUser(), "reason", se.Message)
		s.disconnect(se.Reason, se.Message)
	case errors.As(err, &be):
		s.outcome("unreachable")
		s.logger().Info("target unreachable", "user", s.logUser(), "err", err)
		s.disconnect(be.Reason, be.Message)
	default:
		s.outcome("error")
		s.logger().Warn("connect failed", "user", s.logUser(), "err", err)
		s.disconnect("server error", "target unreachable")
	}
}

// BackendFailed is called on the loop when a logged-in backend could not
// be moved onto it.
func (s *Session) BackendFailed(err error) {
	if s.state == stateBusy {
		s.connectFailed(&BackendError{Reason: "server error", Message: "cannot relay the connection", Err: err})
	}
}

// ServerOpened is called on the loop once the backend's socket is served
// by it: the relay starts with the server's (filtered) hello.
func (s *Session) ServerOpened(server Conn, b *Backend, now time.Time) {
	if s.state != stateBusy {
		server.Close()
		return
	}
	s.server = server
	s.admit()
	s.c2s.src, s.c2s.dst = s.client, server
	s.s2c.src, s.s2c.dst = server, s.client
	s.c2s.max = s.cfg.MaxPacketSize
	s.s2c.max = frame.AbsMaxPacketSize
	s.s2c.video = s.cfg.Video != nil && !s.s2c.link.Uncompressed()
	s.c2s.reader.MaxPacketSize = s.cfg.MaxPacketSize
	s.s2c.reader.MaxPacketSize = frame.AbsMaxPacketSize
	s.state = stateRelay
	s.active = now
	if s.cfg.PingInterval > 0 {
		s.ping = newPinger(s.caps, b.Hello)
		if s.ping != nil {
			s.ping.last = now
		}
	}
	w := frame.Writer{Encoding: b.Header.Flags.Encoding(), Compression: b.Header.Compression}
	if s.s2c.link.Uncompressed() {
		s.s2c.compress = s.clientCompression()
		w.Compression = s.s2c.compress
	}
	out, err := w.AppendPacket(nil, frame.Packet{"hello", ClientHello(b.Hello)})
	if err != nil {
		s.disconnect("server error", "cannot forward the server's hello")
		return
	}
	s.client.Write(out)
	s.outcome("relayed")
	s.logger().Info("relaying", "user", s.logUser(), "display", s.display, "target", s.target)
	// The handshake's state is not needed any more; an idle session
	// should hold as little as possible.
	s.caps, s.identity, s.challenge = nil, nil, nil
	s.reader = frame.Reader{}
	s.pump(s.c2s)
	s.pump(s.s2c)
}

// clientCompression is the compressor the client would get from the
// server: lz4 at the client's level when it has lz4.
func (s *Session) clientCompression() frame.Compression {
	level, ok := s.caps.Int("compression_level")
	if !ok {
		level = 1
	}
	if level <= 0 {
		return frame.NoCompression
	}
	if lz4, _ := s.caps.Bool("lz4"); lz4 || slices.Contains(s.caps.Texts("compressors"), "lz4") {
		return frame.AlgoLZ4.WithLevel(int(level))
	}
	return frame.AlgoZlib.WithLevel(int(level))
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
	// gnet keeps reading a paused source: enforce the limit on every
	// read, not only at the next sweep.
	if p.paused && s.state == stateRelay && s.cfg.MaxSessionBuffer > 0 && s.Buffered() > s.cfg.MaxSessionBuffer {
		s.logger().Warn("session buffer limit exceeded", "user", s.logUser(), "bytes", s.Buffered())
		s.disconnect("connection too slow", fmt.Sprintf("more than %d bytes buffered", s.cfg.MaxSessionBuffer))
	}
}

func (s *Session) relayError(p *pipe, err error) {
	if s.state != stateRelay {
		return
	}
	if p.toServer {
		s.logger().Info("invalid packet from client", "err", err)
		s.disconnect("protocol error", strings.TrimPrefix(err.Error(), "frame: "))
	} else {
		s.logger().Warn("invalid packet from server", "err", err)
		s.disconnect("server error", "invalid packet from the server")
	}
}

// send writes a packet of the proxy's own to the client, in the client's
// encoder, uncompressed (these packets are small).
func (s *Session) send(p frame.Packet) {
	w := frame.Writer{Encoding: s.enc}
	b, err := w.AppendPacket(nil, p)
	if err != nil {
		s.logger().Error("cannot encode packet", "packet", p.String(), "err", err)
		return
	}
	s.client.Write(b)
}

// disconnect sends the client an xpra disconnect packet (or xpra's text
// line before a hello) and ends the session; the server, if any, is told
// the client is gone.
func (s *Session) disconnect(reason string, extra ...string) {
	if s.state == stateClosing || s.state == stateClosed {
		return
	}
	if s.state == stateRelay && s.s2c != nil && !s.s2c.finishPacket() {
		// The client is in the middle of a packet whose rest is not
		// here: a packet of ours would corrupt its stream. Close only.
		s.logger().Info("closing mid-packet; the client cannot be sent the reason", "reason", reason)
		s.closeServer("client connection lost")
		s.beginClose()
		return
	}
	if s.helloSeen {
		p := frame.Packet{"disconnect", reason}
		for _, e := range extra {
			p = append(p, e)
		}
		s.send(p)
	} else {
		s.client.Write([]byte("disconnect: " + strings.Join(append([]string{reason}, extra...), ", ") + "\n"))
	}
	s.closeServer("client connection lost")
	s.beginClose()
}

func (s *Session) closeServer(why string) {
	if s.server == nil {
		return
	}
	if s.state == stateRelay && (s.c2s == nil || s.c2s.finishPacket()) {
		w := frame.Writer{Encoding: s.enc}
		if b, err := w.AppendPacket(nil, frame.Packet{"disconnect", "server shutdown", why}); err == nil {
			s.server.Write(b)
		}
	}
	s.server.Close()
	s.server = nil
}

// beginClose stops reading the client, half-closes its socket once our
// last bytes are out, and closes it after closeGrace (Sweep) so that the
// client can read the reason.
func (s *Session) beginClose() {
	s.host.Watch(s)
	now := time.Now()
	s.state = stateClosing
	s.deadline = now.Add(closeGrace)
	s.drainBy = now.Add(closeDrain)
	if _, ws := s.client.(closeFramer); ws {
		// WebSocket: the close frame goes after the grace (Sweep), as
		// xpra's server sends it when it hangs up; shutting the socket
		// first would make a browser report an abnormal closure (1006),
		// reconnect and lose the reason it was just sent, and a frame
		// right behind the disconnect races it in xpra's own clients.
		return
	}
	if s.client.OutboundBuffered() == 0 {
		syscall.Shutdown(s.client.Fd(), syscall.SHUT_WR)
	}
}

// OnClientClosed: the client's socket is gone.
func (s *Session) OnClientClosed(err error) {
	if s.state == stateRelay {
		s.logger().Info("client connection lost", "user", s.logUser(), "err", err)
	}
	if s.cfg.Pools != nil && s.state != stateHandedOff {
		s.cfg.Pools.Release(s.ID)
	}
	s.closeServer("client connection lost")
	s.state = stateClosed
}

// OnServerClosed: the backend's socket is gone.
func (s *Session) OnServerClosed(err error) {
	if s.state != stateRelay {
		return
	}
	s.server = nil
	s.logger().Info("server connection lost", "user", s.logUser(), "err", err)
	s.disconnect("server shutdown", "server connection lost")
}

// Sweep enforces the timeouts and backpressure; called on the loop about
// every 100 ms. It returns the bytes the session holds in buffers.
func (s *Session) Sweep(now time.Time) int {
	switch s.state {
	case stateHello, stateChallenge, stateBusy, stateStop:
		if now.After(s.deadline) {
			s.logger().Info("login timeout", "user", s.logUser())
			s.disconnect("login timeout")
		}
	case stateRelay:
		s.maybePing(now)
		if s.cfg.IdleTimeout > 0 && now.Sub(s.active) > s.cfg.IdleTimeout {
			s.logger().Info("idle timeout", "user", s.logUser())
			s.disconnect("idle timeout")
			break
		}
		for _, p := range []*pipe{s.c2s, s.s2c} {
			if p.paused && p.dst.OutboundBuffered() <= lowWater {
				p.paused = false
				s.pump(p)
			}
		}
		if held := s.Buffered(); s.cfg.MaxSessionBuffer > 0 && held > s.cfg.MaxSessionBuffer {
			s.logger().Warn("session buffer limit exceeded", "user", s.logUser(), "bytes", held)
			s.disconnect("connection too slow", fmt.Sprintf("more than %d bytes buffered", s.cfg.MaxSessionBuffer))
		}
	case stateClosing:
		drained := s.client.OutboundBuffered() == 0
		cf, ws := s.client.(closeFramer)
		if ws && !s.closeSent && drained && now.After(s.deadline) {
			cf.SendClose()
			s.closeSent = true
			drained = s.client.OutboundBuffered() == 0
		}
		done := !ws || s.closeSent
		if drained && done {
			syscall.Shutdown(s.client.Fd(), syscall.SHUT_WR)
		}
		if (drained && done && now.After(s.deadline)) || now.After(s.drainBy) {
			s.client.Close()
			s.state = stateClosed
		}
	}
	return s.Buffered()
}

// Buffered is the bytes held for this session in user space.
func (s *Session) Buffered() int {
	n := s.client.InboundBuffered() + s.client.OutboundBuffered()
	if s.server != nil {
		n += s.server.InboundBuffered() + s.server.OutboundBuffered()
	}
	return n
}

// Shed ends the session because the proxy is over its global budget.
func (s *Session) Shed() {
	s.logger().Warn("global buffer budget exceeded", "user", s.logUser(), "bytes", s.Buffered())
	s.disconnect("connection too slow", "proxy buffer budget exceeded")
}

// Forget drops a session whose connection turned out not to speak xpra
// (HTTP, TLS): nothing is written, the connection lives on elsewhere.
func (s *Session) Forget() { s.state = stateClosed }

// Reject ends the session with a disconnect reason the client can show
// (bad input found by the transport, such as an oversized WebSocket
// frame).
func (s *Session) Reject(reason string, extra ...string) {
	s.logger().Info("connection rejected", "user", s.logUser(), "reason", reason, "detail", strings.Join(extra, " "))
	s.disconnect(reason, extra...)
}

// Stop ends the session on request (xpraproxy stop :proxy-ID), telling
// both peers why.
func (s *Session) Stop(why string) {
	s.logger().Info("stopping", "user", s.logUser(), "why", why)
	s.disconnect("server shutdown", why)
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
