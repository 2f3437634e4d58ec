package sshd

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"golang.org/x/crypto/ssh"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Logins: an SSH password goes through the listener's authentication
// modules exactly as an xpra challenge's answer does (all must pass; the
// first that lists sessions decides them), so the user's row decides the
// target as for any login. A failure says nothing more than SSH's own
// "permission denied" whatever the cause (wrong password, unknown user),
// and counts against the login throttle like a failed xpra login.

// errDenied is every refused login: the client learns nothing more.
var errDenied = errors.New("sshd: permission denied")

// login is one connection's authentication state, touched by
// x/crypto/ssh's callbacks on the connection's goroutine.
type login struct {
	srv    *Server
	remote net.Addr
	src    string
	peer   string
	// started tells the caps once that a login attempt came.
	started func()
	// count records an outcome for the metrics (loop.SSHConn.Count).
	count func(result string)
	// the result, once a callback accepted the user
	user     string
	identity *authn.Identity
	method   string
	// deferred: a paramiko client was let in without credentials; the
	// xpra challenge logs it in (deferNone).
	deferred bool
	// keysRejected: a public key was refused (counted as one failure
	// for keyUser if the connection never logs in).
	keysRejected atomic.Bool
	keyUser      string
}

// RemoteAddr and Fd make the connection what modules may ask of it
// (hosts: its address; peercred has no descriptor to ask).
func (l *login) RemoteAddr() net.Addr { return l.remote }
func (l *login) Fd() int              { return -1 }

// throttled refuses an attempt while the source (or the user, from this
// source) is locked out, saying for how long in an SSH banner.
func (l *login) throttled(user string) error {
	if ok, wait := l.srv.Throttle.Allow(l.src, user); !ok {
		l.count("ssh-throttled")
		return &ssh.BannerError{Err: errDenied,
			Message: fmt.Sprintf("xpraproxy: too many failed logins, try again in %d seconds\r\n", int(wait.Seconds())+1)}
	}
	return nil
}

// password checks user's password with every module.
func (l *login) password(meta ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
	l.started()
	user := meta.User()
	if len(user) > relay.MaxUsernameLength || user == "" {
		l.srv.Throttle.Failed(l.src, user)
		return nil, errDenied
	}
	if err := l.throttled(user); err != nil {
		return nil, err
	}
	verify := func(candidate []byte) bool { return subtle.ConstantTimeCompare(candidate, pw) == 1 }
	return l.modules(user, "ssh-password", verify, pw)
}

// keyboard checks a password asked as keyboard-interactive's one
// question: 6.x's paramiko client tries that before "password".
func (l *login) keyboard(meta ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	answers, err := ask("", "", []string{"Password: "}, []bool{false})
	if err != nil {
		return nil, err
	}
	if len(answers) != 1 || len(answers[0]) > maxPassword {
		return nil, errDenied
	}
	return l.password(meta, []byte(answers[0]))
}

// maxPassword bounds a keyboard-interactive answer (x/crypto/ssh bounds
// the packet).
const maxPassword = 4096

// none answers the "none" method: a login when no module needs a
// password (auth=none, hosts, peercred...); for paramiko clients that
// need one, a deferred login (deferNone); a refusal for anyone else,
// which then offers a password or a key.
func (l *login) none(meta ssh.ConnMetadata) (*ssh.Permissions, error) {
	l.started()
	user := meta.User()
	if len(user) > relay.MaxUsernameLength {
		return nil, errDenied
	}
	if err := l.throttled(user); err != nil {
		return nil, err
	}
	if !needsPassword(l.srv.Modules) {
		return l.modules(user, "ssh-none", nil, nil)
	}
	if deferNone(meta.ClientVersion()) {
		l.user, l.method, l.deferred = user, "ssh-none, then the xpra challenge", true
		return &ssh.Permissions{}, nil
	}
	return nil, errDenied
}

// deferNone reports whether a client's "none" attempt is let in with
// the login deferred to the xpra challenge: paramiko's (xpra's SSH
// client, 3.1 and 6.x) send a new service request before each
// authentication attempt (paramiko #23), which x/crypto/ssh refuses by
// ending the connection, so their first attempt, "none" (xpra's
// XPRA_SSH_NONE_AUTH, on by default), is the only one they get. They
// answer the xpra challenge with the same password (the URL's), over the
// encrypted channel, through the same modules: the user's row decides as
// for any login. A paramiko client with none disabled sends its password
// first and is logged in by SSH.
func deferNone(clientVersion []byte) bool {
	return bytes.Contains(clientVersion, []byte("paramiko"))
}

// modules runs the listener's modules in order for user.
func (l *login) modules(user, method string, verify func([]byte) bool, pw []byte) (*ssh.Permissions, error) {
	mods := l.srv.Modules
	if len(mods) == 0 {
		// xpra's proxy refuses to run without authentication.
		return nil, errDenied
	}
	var chosen *authn.Identity
	for _, m := range mods {
		req := authn.Request{Username: user, Peer: l.peer, Verify: verify, Password: pw, Conn: l}
		if !m.Challenge() {
			req.Verify, req.Password = nil, nil
		}
		id, err := l.srv.authenticate(m, req)
		switch {
		case errors.Is(err, authn.ErrAuthFailed):
			l.count("ssh-auth-failed")
			l.srv.Throttle.Failed(l.src, user)
			l.srv.log().Info("ssh authentication failed", "peer", l.peer, "user", logsafe.String(user), "module", m.Name(), "why", authn.Why(err))
			return nil, errDenied
		case errors.Is(err, authn.ErrUnavailable):
			l.count("ssh-auth-unavailable")
			l.srv.log().Warn("user database unavailable", "peer", l.peer, "user", logsafe.String(user), "module", m.Name(), "err", err)
			return nil, &ssh.BannerError{Err: errDenied, Message: "xpraproxy: the user database is not available, try again later\r\n"}
		case err != nil:
			l.srv.log().Warn("ssh authentication error", "peer", l.peer, "user", logsafe.String(user), "module", m.Name(), "err", err)
			return nil, errDenied
		}
		if chosen == nil || (!chosen.Explicit && id.Explicit) {
			chosen = id
		}
	}
	l.user, l.identity, l.method = user, chosen, method
	return &ssh.Permissions{}, nil
}

// needsPassword: some module checks a password (otherwise "none" logs in).
func needsPassword(mods []authn.Module) bool {
	for _, m := range mods {
		if m.Challenge() {
			return true
		}
	}
	return false
}

// authenticate runs one module; a panic in it refuses the login.
func (s *Server) authenticate(m authn.Module, req authn.Request) (id *authn.Identity, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("sshd: module %s: panic: %v", m.Name(), r)
		}
	}()
	return m.Authenticate(req)
}
