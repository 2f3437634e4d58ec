package sshd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Key logins: a public key from the user's authorized_keys file logs the
// user in; the user's sessions then come from the modules that can find
// a user without a password (authn.Identifier: sqlite, sql, multifile),
// and the modules that need no password (hosts, peercred...) still
// decide, so the user's row decides the target as for a password login.
// A user no such module knows is refused. Lines with options (from=,
// command=...) are ignored: none of them would be honoured here.

// maxKeysFile bounds an authorized_keys file read per attempt.
const maxKeysFile = 1 << 20

// keysFile is where user's authorized keys are, or "" for nowhere: the
// listener's template (%u the username, %h the home directory, as
// OpenSSH's AuthorizedKeysFile), else ~/.ssh/authorized_keys of the user
// when the proxy runs as root, or of the proxy's own user for that user
// only (as xpra's server).
func (s *Server) keysFile(username string) string {
	if username == "" || strings.ContainsAny(username, "/\x00") || username == "." || username == ".." {
		return ""
	}
	home := func() string {
		u, err := user.Lookup(username)
		if err != nil {
			return ""
		}
		return u.HomeDir
	}
	if t := s.AuthorizedKeys; t != "" {
		var b strings.Builder
		for i := 0; i < len(t); i++ {
			if t[i] != '%' || i+1 == len(t) {
				b.WriteByte(t[i])
				continue
			}
			i++
			switch t[i] {
			case 'u':
				b.WriteString(username)
			case 'h':
				h := home()
				if h == "" {
					return ""
				}
				b.WriteString(h)
			default:
				b.WriteByte(t[i])
			}
		}
		return b.String()
	}
	if os.Geteuid() == 0 {
		if h := home(); h != "" {
			return filepath.Join(h, ".ssh", "authorized_keys")
		}
		return ""
	}
	if me, err := user.Current(); err == nil && me.Username == username {
		return filepath.Join(me.HomeDir, ".ssh", "authorized_keys")
	}
	return ""
}

// authorized reports whether key is one of path's (without options).
func authorized(path string, key ssh.PublicKey) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	want := key.Marshal()
	sc := bufio.NewScanner(io.LimitReader(f, maxKeysFile))
	sc.Buffer(make([]byte, 0, 16<<10), 64<<10)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, _, options, _, err := ssh.ParseAuthorizedKey(line)
		if err != nil || len(options) > 0 {
			continue
		}
		if bytes.Equal(k.Marshal(), want) {
			return true
		}
	}
	return false
}

// publicKey logs user in with a key of theirs.
func (l *login) publicKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	l.started()
	user := meta.User()
	if len(user) > relay.MaxUsernameLength {
		return nil, errDenied
	}
	if err := l.throttled(user); err != nil {
		return nil, err
	}
	path := l.srv.keysFile(user)
	if path == "" || !authorized(path, key) {
		l.keyUser = user
		l.keysRejected.Store(true)
		return nil, errDenied
	}
	id, err := l.identify(user)
	if err != nil {
		return nil, err
	}
	l.user, l.identity, l.method = user, id, "ssh-publickey "+ssh.FingerprintSHA256(key)
	return &ssh.Permissions{}, nil
}

// identify finds the sessions of a user a key logged in: the modules
// that can look a user up, and those that need no password.
func (l *login) identify(user string) (*authn.Identity, error) {
	var chosen *authn.Identity
	known := false
	for _, m := range l.srv.Modules {
		var (
			id  *authn.Identity
			err error
		)
		switch im, ok := m.(authn.Identifier); {
		case ok:
			id, err = im.Identify(user)
			known = known || err == nil
		case !m.Challenge():
			id, err = l.srv.authenticate(m, authn.Request{Username: user, Peer: l.peer, Conn: l})
		default:
			continue // a password module that cannot look users up (pam, ldap)
		}
		switch {
		case errors.Is(err, authn.ErrAuthFailed):
			l.srv.Throttle.Failed(l.src, user)
			l.srv.log().Info("ssh key login refused", "peer", l.peer, "user", logsafe.String(user), "module", m.Name(), "why", authn.Why(err))
			return nil, errDenied
		case err != nil:
			l.srv.log().Warn("ssh key login: module error", "peer", l.peer, "user", logsafe.String(user), "module", m.Name(), "err", err)
			return nil, errDenied
		}
		if chosen == nil || (!chosen.Explicit && id.Explicit) {
			chosen = id
		}
	}
	if chosen == nil || (!known && needsPassword(l.srv.Modules)) {
		// Only password modules that cannot look users up (pam, ldap):
		// the account is the system's, its local sessions are the
		// user's.
		chosen = &authn.Identity{Username: user}
	}
	return chosen, nil
}
