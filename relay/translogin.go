package relay

import "github.com/xpraproxy/xpraproxy/authn"

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
