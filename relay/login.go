package relay

// The login phase: the client's hello, requests answered before login,
// the challenge and the authentication modules, on and off the loop.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
)

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
			s.disconnect(CloseClientError, "protocol error", fmt.Sprintf("unexpected %s before authentication", p))
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
		if s.aes != nil && !errors.Is(err, frame.ErrShortBuffer) {
			var pe *frame.PaddingError
			if errors.As(err, &pe) {
				// A wrong key is a failed login: guessing keys is
				// throttled as guessing passwords is.
				s.cfg.Throttle.Failed(s.source(), s.user)
			}
			s.protocolError(err) // a wrong key, a clear frame on an encrypted link
		}
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
	s.ending(CloseClientError, "invalid packet format", guess)
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
		s.ending(CloseClientError, "invalid packet format", strings.TrimPrefix(msg, "frame: "))
		s.client.Write([]byte("disconnect: invalid packet format, " + strings.TrimPrefix(msg, "frame: ") + "\n"))
		s.beginClose()
		return
	}
	s.disconnect(CloseClientError, "protocol error", strings.TrimPrefix(msg, "frame: "))
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
		s.disconnect(CloseClientError, "protocol error", "invalid hello packet")
		return
	}
	s.enc = s.reader.Header().Flags.Encoding()
	s.helloSeen = true
	s.host.Progress(s, LoginHello)
	s.claimed = ClaimedVersion(caps)
	if _, ok := caps.Text("version"); !ok {
		s.disconnect(CloseClientError, "version error", "remote version not available!")
		return
	}
	if request(caps) == "version" {
		s.ending(CloseRequest, "version request")
		s.send(frame.Packet{"hello", frame.NewDict("version", s.claimed, "xpraproxy.version", Version)})
		s.beginClose()
		return
	}
	s.caps = caps
	if s.user == "" {
		s.user, _ = caps.Text("username")
		if len(s.user) > MaxUsernameLength {
			s.disconnect(CloseAuthFailed, "authentication failed", "invalid username")
			return
		}
	}
	if ok, wait := s.cfg.Throttle.Allow(s.source(), s.user); !ok {
		s.outcome("throttled")
		s.disconnect(CloseThrottled, "authentication failed", fmt.Sprintf("too many failed logins, try again in %d seconds", int(wait.Seconds())+1))
		return
	}
	if m := s.rowKeyModule(caps); m != nil {
		s.lookupRowKey(m, s.afterHello)
		return
	}
	s.afterHello()
}

// afterHello goes on with a hello once its cipher's key is known: the
// cipher is worked out off the loop (aes.go), then the login goes on.
func (s *Session) afterHello() {
	if c, _ := clientCipherCaps(s.caps); c == nil && s.clientEncryption() == "" {
		s.cipherCaps = nil
		s.loginRound()
		return
	}
	prev, caps := s.state, s.caps
	var (
		setup   *cipherSetup
		refusal string
	)
	s.offLoop(WorkAuth, func() { setup, refusal = s.prepareClientCipher(caps) }, func() {
		s.state = prev
		if refusal != "" {
			s.cfg.Throttle.Failed(s.source(), s.user)
			s.disconnect(CloseAuthFailed, "authentication failed", refusal)
			return
		}
		s.cipherCaps = nil
		if setup != nil {
			s.installClientCipher(setup)
			s.cipherCaps = setup.caps
		}
		s.loginRound()
	}, nil)
}

// loginRound answers the challenge, or starts the next round.
func (s *Session) loginRound() {
	if s.state == stateChallenge {
		if s.pre != nil {
			s.challenge = nil
			s.nextRound() // the fake challenge's answer: not checked
			return
		}
		s.verifyRound()
		return
	}
	s.nextRound()
}

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
	if s.pre != nil {
		// The transport authenticated the user (SSH): no challenge,
		// but for a client that has a password and waits for one
		// before its full hello, xpra's "fake challenge", whose answer
		// is not checked.
		if s.state != stateChallenge && s.caps.Has("challenge") && !s.caps.Has("challenge_response") {
			s.fakeChallenge()
			return
		}
		s.identity = s.pre.Identity
		s.logger().Info("logged in by the transport", "user", s.logUser(), "method", s.pre.Method)
		s.authenticated()
		return
	}
	if len(s.cfg.Modules) == 0 {
		// xpra's proxy refuses to run without authentication.
		s.disconnect(CloseNoTarget, "session not found error", "no sessions found")
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
		s.disconnect(CloseAuthFailed, "authentication failed", "no supported digest")
		return
	}
	s.challenge = ch
	s.state = stateChallenge
	s.deadline = time.Now().Add(s.cfg.ChallengeTimeout)
	var auth any = ""
	if s.cipherCaps != nil {
		auth = s.cipherCaps // the parameters the client's answer is encrypted with
	}
	s.send(frame.Packet{"challenge", ch.ServerSalt, auth, string(ch.Digest), string(ch.SaltDigest), "password"})
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
		s.disconnect(CloseAuthFailed, "authentication failed")
		return
	}
	s.authenticate(s.cfg.Modules[s.module], verify, password)
}

// authenticate runs module m off the loop.
func (s *Session) authenticate(m authn.Module, verify func([]byte) bool, password []byte) {
	req := authn.Request{Username: s.user, Peer: s.peer, Verify: verify, Password: password, Conn: s.client}
	var (
		id  *authn.Identity
		err error
	)
	s.offLoop(WorkAuth, func() { id, err = m.Authenticate(req) }, func() {
		if err != nil {
			if errors.Is(err, authn.ErrAuthFailed) {
				s.cfg.Throttle.Failed(s.source(), s.user)
				s.outcome("auth-failed")
				s.logger().Info("authentication failed", "user", s.logUser(), "module", m.Name(), "why", authn.Why(err), "err", err)
				if why := authn.Why(err); why != "" {
					s.disconnect(CloseAuthFailed, "authentication failed", why)
				} else {
					s.disconnect(CloseAuthFailed, "authentication failed")
				}
			} else if errors.Is(err, authn.ErrUnavailable) {
				// The database is down or slow: say so, and do not count
				// it against the client as a failed login.
				s.outcome("auth-unavailable")
				s.logger().Warn("user database unavailable", "user", s.logUser(), "module", m.Name(), "err", err)
				s.disconnect(CloseAuthError, "authentication error", "the user database is not available, try again later")
			} else {
				s.outcome("auth-error")
				s.logger().Warn("authentication error", "user", s.logUser(), "module", m.Name(), "err", err)
				s.disconnect(CloseAuthError, "authentication error", "cannot access sessions")
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
	}, nil)
}
