package relay

// From login to relaying: finding the session the user may use (or
// starting one), dialing it off the loop, and moving the backend onto the
// session's loop.

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/bridge"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/disconnect"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
	"github.com/xpraproxy/xpraproxy/route"
)

// authenticated: answer requests, else find the session and connect.
func (s *Session) authenticated() {
	s.authed = true
	s.host.Progress(s, LoginAuthenticated)
	s.cfg.Throttle.Succeeded(s.source())
	s.reader.MaxPacketSize = s.cfg.MaxPacketSize
	s.reader.MaxValues = 0
	if s.aes != nil {
		s.aes.conn.max = s.cfg.MaxPacketSize
	}
	s.logger().Info("authenticated", "user", s.logUser())
	switch r := request(s.caps); r {
	case "", "connect_test":
	case "info", "stop", "id", "reload", "upgrade":
		s.answer(r)
		return
	default:
		s.disconnect(CloseDenied, "permission error", "invalid request: "+r)
		return
	}
	var (
		err   error
		acct  authn.Account
		plan  route.Plan
		start *StartRequest
	)
	id := s.identity
	root := s.cfg.HandOff != nil
	sns, wantsNew := s.caps.Dict("start-new-session")
	clientEnc := PeerEncoders(s.caps)
	user := s.user
	req := route.Request{Session: s.ID, User: user, Displays: id.Displays, Explicit: id.Explicit, Requested: s.requested(),
		StartNew: wantsNew, StartIfNone: s.cfg.StartSessions}
	router := s.router()
	s.offLoop(WorkDial, func() {
		var aerr error
		acct, aerr = authn.ResolveAccount(id)
		switch {
		case aerr != nil && root:
			err = &disconnect.Error{Stage: disconnect.Session, Reason: "authentication error", Message: "cannot find the account to run as"}
			return
		case root && acct.Root():
			err = &disconnect.Error{Stage: disconnect.Session, Reason: "authentication error", Message: "cannot run proxy instances as root"}
			return
		}
		req.Dirs, req.UID = s.userDirs(acct, root)
		if plan, err = router.Route(req); err == nil && plan.Start {
			if !wantsNew {
				sns = nil // xpra's proxy starts a plain session for a user who has none
			}
			start, err = s.startRequest(sns, acct, root, id.SessionOptions, clientEnc)
		}
		if err == nil && s.cfg.UserLimit != nil {
			first := ""
			if len(plan.Candidates) > 0 {
				first = route.RedactDisplay(plan.Candidates[0].Display)
			}
			err = s.cfg.UserLimit.Reserve(user, s.ID, first)
		}
	}, func() {
		if err != nil {
			s.connectFailed(err)
			return
		}
		if root {
			s.handOff(plan.Candidates, plan.Pool, start, acct, id.SessionOptions)
			return
		}
		// As in xpra, a proxy that is not root relays (and starts
		// sessions) as itself.
		if start != nil {
			s.startAndConnect(start, nil, id.SessionOptions)
			return
		}
		var (
			name  string
			track PoolTracker // a nil *route.Pool must stay a nil interface
		)
		if plan.Pool != nil {
			name, track = plan.Pool.Name, plan.Pool
		}
		s.connect(plan.Candidates, name, track, id.SessionOptions)
	}, nil)
}

// startRequest validates a start-new-session (nil: a plain new session)
// against the configuration and the user's limit; off the loop.
func (s *Session) startRequest(sns frame.Dict, acct authn.Account, root bool, opts []authn.Option, client Encoders) (*StartRequest, error) {
	if !s.cfg.StartSessions {
		return nil, &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error", Message: "starting new sessions is disabled on this proxy"}
	}
	switch {
	case !root && !s.cfg.StartAsProxyUser:
		// The proxy's own account can read its user database and keys:
		// a user's commands never run as it unless the operator says so.
		return nil, &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error",
			Message: "this proxy does not start sessions: it does not run as root (see --proxy-start-as-proxy-user)"}
	case root && (acct.Name == "" || acct.UID == nobodyUID):
		// nobody is shared by every unmapped user.
		return nil, &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error",
			Message: "this user has no local account to start a session as"}
	}
	r, ignored, err := ParseStartRequest(sns, StartPolicy{Commands: s.cfg.StartCommands, Env: s.cfg.StartEnv})
	if err != nil {
		return nil, &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error", Message: err.Error()}
	}
	// The xpra that starts it: of the client's generation, from the
	// user's row (start-xpra=PATH[:PATH]) or the proxy's list.
	var rowPaths []string
	for _, o := range opts {
		if o.Key == "start-xpra" {
			rowPaths = strings.FieldsFunc(o.Value, func(r rune) bool { return r == ':' || r == ';' })
		}
	}
	prog, enc, err := s.cfg.StartPrograms.Choose(rowPaths, client)
	if err != nil {
		return nil, &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error", Message: err.Error()}
	}
	if r.Mode, err = Subcommand(r.Mode, enc); err != nil {
		return nil, &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error", Message: err.Error()}
	}
	r.Xpra = prog
	if len(ignored) > 0 {
		s.logger().Warn("start-new-session options ignored", "user", s.logUser(), "options", strings.Join(ignored, ","))
	}
	if max := s.cfg.MaxStartedSessions; max > 0 {
		dirs, uid := s.userDirs(acct, root)
		if n := len(route.LocalSessions(dirs, s.cfg.Hostname, uid, time.Second)); n >= max {
			return nil, &disconnect.Error{Stage: disconnect.Session, Reason: "session not found error",
				Message: fmt.Sprintf("too many sessions: %d running, the limit is %d", n, max)}
		}
	}
	return r, nil
}

// startAndConnect starts the new session as this process's user, then
// connects to it; track (nil in-process) is told where it went.
func (s *Session) startAndConnect(r *StartRequest, track PoolTracker, opts []authn.Option) {
	// `xpra start` takes seconds: the login deadline moves.
	s.deadline = time.Now().Add(3*s.cfg.ConnectTimeout + time.Second)
	var (
		c   route.Candidate
		err error
	)
	dirs, _ := s.userDirs(authn.Account{UID: os.Getuid()}, false)
	s.logger().Info("starting a new session", "user", s.logUser(), "mode", r.Mode, "args", logsafe.String(strings.Join(r.Args, " ")))
	s.offLoop(WorkDial, func() {
		if len(dirs) == 0 {
			err = &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot start a new session: no socket directory"}
			return
		}
		os.MkdirAll(dirs[0], 0o700)
		c, err = StartSession(r, dirs[0], s.cfg.Hostname, 2*s.cfg.ConnectTimeout)
	}, func() {
		if err != nil {
			s.connectFailed(err)
			return
		}
		s.logger().Info("new session started", "user", s.logUser(), "display", c.Display)
		s.connect([]route.Candidate{c}, "", track, opts)
	}, nil)
}

// connect dials the target off the loop, then moves the logged-in
// backend onto the session's loop; track, when set, is told which of
// cands (those of the pool named pool, if any) failed and which was
// used. A target of the other xpra generation is bridged
// (docs/bridge.md) when nothing of the client's own is available and
// bridging is not off.
func (s *Session) connect(cands []route.Candidate, pool string, track PoolTracker, opts []authn.Option) {
	var (
		b        *Backend
		err      error
		link     *LinkOptions
		warnings []string
		display  string
		target   route.Target
		bridged  bridge.Gen // the server's generation when bridging
	)
	caps, enc := s.caps, s.enc
	clientEnc := PeerEncoders(caps)
	clientGen := genOf(clientEnc)
	canBridge := !s.cfg.NoBridge && !bridgeOff(opts) && clientGen != 0
	cands = orderByGeneration(cands, clientEnc, s.cfg.Generations)
	// dial logs in to one candidate; to is the server's generation when
	// bridging, 0 for pass-through.
	dial := func(c route.Candidate, to bridge.Gen) error {
		display, target = c.Display, c.Target
		key := target.Network + ":" + target.Address
		var hello frame.Dict
		hello, link, warnings = ServerHello(caps, target, opts)
		helloEnc := enc
		if to != 0 {
			hello = bridge.ClientHello(hello, clientGen, to, bridge.LZ4OrZlib)
			helloEnc = to.Encoding()
		} else if s.cfg.Video != nil && !link.Uncompressed() && clientDecodes(caps, s.cfg.Video.Encodings()) {
			for _, kv := range VideoCaps(s.cfg.Video.Encodings()) {
				k, _ := frame.AsText(kv.Key)
				hello.Set(k, kv.Value)
			}
		}
		pw := target.Password
		if pw == "" {
			pw = link.Password
		}
		if !s.cfg.Connects.Acquire(key) {
			return errTargetBusy
		}
		var derr error
		b, derr = Dial(DialConfig{Target: target, Network: target.Network, Address: target.Address,
			Hello: hello, Encoding: helloEnc, Password: pw, Timeout: s.cfg.ConnectTimeout, MaxPacketSize: frame.AbsMaxPacketSize,
			Link: link})
		s.cfg.Connects.Release(key)
		if derr == nil {
			s.cfg.Generations.Learn(key, PeerEncoders(b.Hello))
			if track != nil {
				track.Use(s.ID, c.Display)
			}
		}
		return derr
	}
	s.offLoop(WorkDial, func() {
		bridgeTo, bridgeGen := -1, bridge.Gen(0)
		for i, c := range cands {
			key := c.Target.Network + ":" + c.Target.Address
			if known := s.cfg.Generations.Of(key); !clientEnc.Compatible(known) {
				// Known from an earlier hello or refusal: no dial.
				err = mismatchError(clientEnc, known, "")
				if g := genOf(known); canBridge && bridgeTo < 0 && g != 0 {
					bridgeTo, bridgeGen = i, g
				}
				if i < len(cands)-1 {
					continue
				}
				break
			}
			err = dial(c, 0)
			be, isBackend := disconnect.Is(err, disconnect.Backend)
			if err != nil && isBackend && be.Refused != "" {
				if server := RefusalEncoders(be.Refused, clientEnc); server != 0 && !clientEnc.Compatible(server) {
					s.cfg.Generations.Learn(key, server)
					err = mismatchError(clientEnc, server, be.Refused)
					if g := genOf(server); canBridge && bridgeTo < 0 && g != 0 {
						bridgeTo, bridgeGen = i, g
					}
					if i < len(cands)-1 {
						s.logger().Info("target of another xpra generation, trying the next in its pool", "target", c.Target.String())
						continue
					}
					break
				}
			}
			if err == nil || i == len(cands)-1 || !isBackend || be.Message != "failed to connect to display" {
				break
			}
			// A pool member that does not answer: the next one.
			next := cands[i+1].Display
			if track != nil {
				track.Failed(s.ID, c.Display, next)
			}
			s.logger().Warn("target unreachable, trying the next in its pool", "target", c.Target.String(), "next", route.RedactDisplay(next))
		}
		if err != nil && bridgeTo >= 0 && bridgeGen != clientGen && !errors.Is(err, errTargetBusy) {
			// Nothing of the client's generation: bridge.
			if err = dial(cands[bridgeTo], bridgeGen); err == nil {
				bridged = bridgeGen
			}
		}
	}, func() {
		for _, w := range warnings {
			s.logger().Warn(w, "user", s.logUser())
		}
		if errors.Is(err, errTargetBusy) {
			s.retryConnect(cands, pool, track, opts)
			return
		}
		if err != nil {
			if target.Address != "" {
				s.target = target.String() // the access record's: the one tried last
			}
			s.connectFailed(err)
			return
		}
		s.display, s.target = route.RedactDisplay(display), target.String()
		s.serverGen = genOf(PeerEncoders(b.Hello))
		s.pool = pool
		s.c2s = &pipe{s: s, link: link, toServer: true}
		s.s2c = &pipe{s: s, link: link}
		if bridged != 0 {
			s.bridgePipes(clientGen, bridged, b.Hello, link)
		}
		if err := s.host.Enroll(s, b); err != nil {
			b.Conn.Close()
			s.connectFailed(&disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot relay the connection", Err: err})
		}
	}, func() {
		// Nobody waits for the backend any more.
		if b != nil {
			b.Conn.Close()
		}
	})
}

// bridgePipes puts both pipes in bridge mode, each writing what its
// receiver speaks: the client gets lz4 if it has it (a 3.1 client may
// not), the server what its hello lists.
func (s *Session) bridgePipes(client, server bridge.Gen, serverHello frame.Dict, link *LinkOptions) {
	clientComp := bridge.Zlib
	if client == bridge.Gen6 || hasLZ4(s.caps) {
		clientComp = bridge.LZ4
	}
	serverComp := bridge.Zlib
	if server == bridge.Gen6 || hasLZ4(serverHello) {
		serverComp = bridge.LZ4
	}
	s.c2s.bridge = newBridging(client, server, serverComp, link.Uncompressed(), false)
	s.s2c.bridge = newBridging(server, client, clientComp, false, PeerEncoders(s.caps)&EncRencode == 0)
	s.logger().Info("bridging xpra generations", "user", s.logUser(), "client", client.String(), "server", server.String())
}

// hasLZ4 reads whether a hello offers lz4 (flat, nested or listed).
func hasLZ4(caps frame.Dict) bool {
	return capTrue(caps, "lz4") || slices.Contains(caps.Texts("compressors"), "lz4")
}

// errTargetBusy: the target has as many dials in progress as the
// ConnectLimiter allows.
var errTargetBusy = &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "too many connections in progress to this server, try again later"}

// connectRetry is how long a login waits before trying a busy target
// again.
const connectRetry = 25 * time.Millisecond

// retryConnect tries the dial again shortly, holding no worker while it
// waits: a burst of logins to one server queues, and a server that never
// answers delays only the logins to it. Past the login deadline the
// client is told why.
func (s *Session) retryConnect(cands []route.Candidate, pool string, track PoolTracker, opts []authn.Option) {
	if time.Now().Add(connectRetry).After(s.deadline) {
		s.connectFailed(errTargetBusy)
		return
	}
	time.AfterFunc(connectRetry, func() {
		s.host.Post(func() {
			if s.state == stateBusy {
				s.connect(cands, pool, track, opts)
			}
		})
	})
}

// userDirs are the socket directories of the account (expanded for it
// when the proxy is root) and the uid whose sockets count.
func (s *Session) userDirs(acct authn.Account, root bool) ([]string, int) {
	if !root {
		return s.cfg.SocketDirs, s.cfg.UID
	}
	return route.DirsFor(s.cfg.UserSocketDirs, acct.UID), acct.UID
}

// router is the routing seam with this listener's pools.
func (s *Session) router() *route.Router {
	return &route.Router{Pools: s.cfg.Pools, OwnDisplay: s.cfg.OwnDisplay, Hostname: s.cfg.Hostname, Fleet: s.cfg.Fleet}
}

func (s *Session) connectFailed(err error) {
	var de *disconnect.Error
	switch {
	case errors.As(err, &de) && de.Stage == disconnect.Session:
		s.outcome("no-session")
		s.logger().Info("no session", "user", s.logUser(), "reason", de.Message)
		s.disconnect(CloseNoTarget, de.Reason, de.Message)
	case errors.As(err, &de):
		s.outcome("unreachable")
		s.logger().Info("target unreachable", "user", s.logUser(), "stage", de.Stage.String(), "err", err)
		s.disconnect(CloseUnreachable, de.Reason, de.Message)
	default:
		s.outcome("error")
		s.logger().Warn("connect failed", "user", s.logUser(), "err", err)
		s.disconnect(CloseUnreachable, "server error", "target unreachable")
	}
}

// BackendFailed is called on the loop when a logged-in backend could not
// be moved onto it.
func (s *Session) BackendFailed(err error) {
	if s.state == stateBusy {
		s.connectFailed(&disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot relay the connection", Err: err})
	}
}

// ServerOpened is called on the loop once the backend's socket is served
// by it: the relay starts with the server's (filtered) hello.
func (s *Session) ServerOpened(server Conn, b *Backend, now time.Time) {
	if s.state != stateBusy {
		server.Close()
		return
	}
	if b.AES != nil {
		server = b.AES.conn(server) // the server link is encrypted (aesserver.go)
	}
	s.server = server
	s.serverFramed = b.WS != nil || b.TLS
	s.admit()
	s.c2s.src, s.c2s.dst = s.client, server
	s.s2c.src, s.s2c.dst = server, s.client
	s.c2s.max = s.cfg.MaxPacketSize
	s.s2c.max = frame.AbsMaxPacketSize
	s.s2c.video = s.cfg.Video != nil && !s.s2c.link.Uncompressed() && s.s2c.bridge == nil
	if s.s2c.video {
		s.video = &videoState{}
	}
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
	if br := s.s2c.bridge; br != nil {
		if br.tr.From == bridge.Gen6 && br.tr.To == bridge.Gen31 {
			// Sent with the encodings packet that follows it.
			br.held, br.holding, br.heldAt = ClientHello(b.Hello), true, now
			// A 6.x server sets no keymap until the client sends one
			// after the handshake; a 3.1 client never does.
			if km, ok := bridge.KeymapConfig(s.caps); ok {
				if err := s.c2s.bridgeWrite(km); err != nil {
					s.disconnect(CloseBridgeError, "server error", "cannot send the client's keymap to the server")
					return
				}
			}
		} else {
			hello := br.hello(ClientHello(b.Hello), nil)
			err := s.addClientCipher(&hello)
			if err == nil {
				err = s.s2c.bridgeWrite(frame.Packet{"hello", hello})
			}
			if err != nil {
				s.disconnect(CloseServerError, "server error", "cannot forward the server's hello")
				return
			}
		}
	} else {
		w := frame.Writer{Encoding: b.Header.Flags.Encoding(), Compression: b.Header.Compression}
		if s.s2c.link.Uncompressed() {
			s.s2c.compress = s.clientCompression()
			w.Compression = s.s2c.compress
		}
		hello := ClientHello(b.Hello)
		err := s.addClientCipher(&hello)
		var out []byte
		if err == nil {
			out, err = w.AppendPacket(nil, frame.Packet{"hello", hello})
		}
		if err != nil {
			s.disconnect(CloseServerError, "server error", "cannot forward the server's hello")
			return
		}
		s.client.Write(out)
	}
	s.outcome("relayed")
	s.logger().Info("relaying", "user", s.logUser(), "display", s.display, "target", s.target)
	// The handshake's state is not needed any more; an idle session
	// should hold as little as possible.
	s.login = login{}
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
