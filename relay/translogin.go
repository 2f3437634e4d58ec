package relay

import (
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
)

// TransportLogin is a login the client's transport already did: an SSH
// connection authenticated its user with the listener's modules (or a
// key) before the xpra stream began. As xpra's own servers do, the proxy
// then asks no challenge: the client's hello goes straight to routing,
// with this user and identity.
type TransportLogin struct {
	// User is the authenticated username (the SSH user).
	User string
	// Identity is what the modules found for the user: its row's
	// sessions decide the target as for any login.
	Identity *authn.Identity
	// Display is the display the client asked the transport for (`xpra
	// _proxy :N`), used when its hello names none.
	Display string
	// Method names how the transport authenticated ("ssh-password",
	// "ssh-publickey"), for the log.
	Method string
}

// SetTransportLogin marks the session's client as logged in by its
// transport; called before the client's first bytes are read (loop).
func (s *Session) SetTransportLogin(l TransportLogin) {
	if l.Identity == nil {
		l.Identity = &authn.Identity{Username: l.User}
	}
	s.user = l.User
	s.pre = &l
}

// requested is the display the client asked for: its hello's, else the
// one it gave its transport.
func (s *Session) requested() string {
	if d := requestedDisplay(s.caps); d != "" {
		return d
	}
	if s.pre != nil {
		return s.pre.Display
	}
	return ""
}

// fakeChallenge challenges a client its transport logged in, as xpra's
// send_fake_challenge: 3.1's client that has a password (the ssh:// URL's)
// sends its full hello only in answer to a challenge.
func (s *Session) fakeChallenge() {
	ch, err := authn.NewChallenge(s.caps.Texts("digest"), s.caps.Texts("salt-digest"), s.cfg.Encrypted)
	if err != nil {
		s.disconnect(CloseAuthFailed, "authentication failed", "no supported digest")
		return
	}
	s.challenge = ch
	s.state = stateChallenge
	s.deadline = time.Now().Add(s.cfg.ChallengeTimeout)
	s.send(frame.Packet{"challenge", ch.ServerSalt, "", string(ch.Digest), string(ch.SaltDigest), "password"})
}
