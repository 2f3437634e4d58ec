// Package sshd is the SSH transport of xpra's ssh:// for the proxy:
// golang.org/x/crypto/ssh as the server, logins through the listener's
// authentication modules, and the exec requests of xpra's clients
// answered as xpra's own SSH server answers them. The channel that
// carries xpra goes to the relay through the loop's stream seam
// (docs/ssh.md).
package sshd

import (
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/internal/logsafe"
	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Bounds of one connection before its xpra channel.
const (
	// maxAuthTries: failed attempts on one connection before it is
	// closed (OpenSSH's default); the login throttle counts them too.
	maxAuthTries = 6
	// maxChannels: session channels a connection may open in all (the
	// clients' probes, then xpra's), and maxOpen at once.
	maxChannels = 16
	maxOpen     = 2
)

// Server is the SSH transport of one listener: a loop.SSHServer.
type Server struct {
	// Signers are the host keys (HostKeys).
	Signers []ssh.Signer
	// Modules authenticate passwords (--ssh-auth, else the listener's).
	Modules []authn.Module
	// Throttle counts failed logins with the xpra ones; nil: none.
	Throttle *relay.Throttle
	// AuthorizedKeys is where a user's public keys are (keysFile): a
	// path with %u (the username) and %h (their home directory); "":
	// ~/.ssh/authorized_keys as root, or the proxy's own user's.
	AuthorizedKeys string
	Log            *slog.Logger
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// conn is one SSH connection being served.
type conn struct {
	srv   *Server
	hooks loop.SSHConn
	login *login
	sc    *ssh.ServerConn

	open    atomic.Int32 // session channels open now
	total   int          // session channels opened (the accepting goroutine's)
	proxied atomic.Bool  // the xpra channel was handed to the relay
	// handover takes the xpra channel's requests to the connection's
	// goroutine, which refuses them from then on: an idle session pays
	// no goroutine of its own for them.
	handover chan (<-chan *ssh.Request)
}

// ServeSSH runs one connection: the handshake and login within the login
// deadline, then session channels until xpra's; it returns when the
// connection ends.
func (s *Server) ServeSSH(h loop.SSHConn) {
	nc := h.Conn
	remote := nc.RemoteAddr()
	var once sync.Once
	l := &login{srv: s, remote: remote, src: relay.SourceOf(remote), peer: "ssh " + remote.String(),
		started: func() { once.Do(h.LoginStarted) }, count: h.Count}
	if l.count == nil {
		l.count = func(string) {}
	}
	if h.LoginStarted == nil {
		l.started = func() {}
	}
	conf := &ssh.ServerConfig{
		ServerVersion:    "SSH-2.0-xpraproxy",
		MaxAuthTries:     maxAuthTries,
		PasswordCallback: l.password,
		// One question, the password: what 6.x's paramiko client
		// tries first when "none" is off.
		KeyboardInteractiveCallback: l.keyboard,
		PublicKeyCallback:           l.publicKey,
	}
	if len(s.Modules) > 0 {
		conf.NoClientAuth, conf.NoClientAuthCallback = true, l.none
	}
	for _, k := range s.Signers {
		conf.AddHostKey(k)
	}
	nc.SetDeadline(h.Deadline)
	sc, chans, reqs, err := ssh.NewServerConn(nc, conf)
	if err != nil {
		if l.keysRejected.Load() {
			// Public keys offered and refused, and no login: one failure.
			l.count("ssh-key-refused")
			s.Throttle.Failed(l.src, l.keyUser)
		}
		s.log().Debug("ssh connection ended before login", "peer", l.peer, "err", err)
		return
	}
	defer sc.Close()
	nc.SetDeadline(time.Time{})
	c := &conn{srv: s, hooks: h, login: l, sc: sc, handover: make(chan (<-chan *ssh.Request), 1)}
	s.log().Info("ssh login", "peer", l.peer, "user", logsafe.String(l.user), "method", l.method)
	if l.deferred {
		l.count("ssh-deferred")
	} else {
		l.count("ssh-login")
	}
	// The login deadline also bounds the wait for xpra's exec request.
	timer := time.AfterFunc(time.Until(h.Deadline), func() {
		if !c.proxied.Load() {
			s.log().Info("ssh client sent no xpra command in time", "peer", l.peer)
			sc.Close()
		}
	})
	defer timer.Stop()
	// One goroutine serves the connection: new channels, global requests
	// (port forwarding, keepalives: refused) and, once it carries xpra,
	// the xpra channel's requests (refused).
	var xpraReqs <-chan *ssh.Request
	for {
		select {
		case nch, ok := <-chans:
			if !ok {
				return
			}
			c.newChannel(nch)
		case req, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			req.Reply(false, nil)
		case xpraReqs = <-c.handover:
		case req, ok := <-xpraReqs:
			if !ok {
				xpraReqs = nil
				continue
			}
			req.Reply(false, nil)
		}
	}
}

// newChannel accepts a session channel while the connection may open one
// (accepting goroutine).
func (c *conn) newChannel(nch ssh.NewChannel) {
	switch {
	case nch.ChannelType() != "session":
		nch.Reject(ssh.Prohibited, "xpraproxy: only session channels (no forwarding)")
		return
	case c.proxied.Load():
		nch.Reject(ssh.Prohibited, "xpraproxy: one xpra session per connection")
		return
	case c.total >= maxChannels || c.open.Load() >= maxOpen:
		nch.Reject(ssh.ResourceShortage, "xpraproxy: too many channels")
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	c.total++
	c.open.Add(1)
	go c.session(&channel{Channel: ch, conn: c.sc, guarded: make(chan struct{}), decided: make(chan struct{})}, reqs)
}

// session answers one channel's requests: exec commands, the probes
// answered and closed, `xpra _proxy` handed to the relay; anything else
// (shell, pty, subsystem, agent or X11 forwarding, env) refused.
func (c *conn) session(ch *channel, reqs <-chan *ssh.Request) {
	// A channel counts as open until it is answered (a finished probe)
	// or gone, whichever comes first: a client's next probe may come
	// before the close of the previous one is read here.
	var once sync.Once
	done := func() { once.Do(func() { c.open.Add(-1); close(ch.decided) }) }
	defer done()
	go ch.guard()
	for req := range reqs {
		if req.Type != "exec" || c.proxied.Load() || ch.proxy.Load() {
			req.Reply(false, nil)
			continue
		}
		var p struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			req.Reply(false, nil)
			continue
		}
		e := ParseExec(p.Command)
		if e.Proxy && !c.proxied.CompareAndSwap(false, true) {
			e = refuse("one xpra session per connection")
		}
		if !e.Proxy {
			req.Reply(true, nil)
			if e.Status != 0 {
				c.srv.log().Info("ssh command refused", "peer", c.login.peer, "command", logsafe.String(p.Command))
			}
			ch.answer(e)
			done()
			continue
		}
		ch.proxy.Store(true)
		done() // guard hands what it read to the stream
		req.Reply(true, nil)
		var login *relay.TransportLogin
		if !c.login.deferred {
			login = &relay.TransportLogin{User: c.login.user, Identity: c.login.identity, Display: e.Display, Method: c.login.method}
		}
		if err := c.hooks.Open(ch, login); err != nil {
			c.srv.log().Info("ssh session refused", "peer", c.login.peer, "err", err)
			c.sc.Close()
		}
		c.handover <- reqs
		return
	}
}

// channel is a session channel; once it carries xpra, the relay's
// stream (loop.Stream): closing it ends the connection, which had no
// other use.
type channel struct {
	ssh.Channel
	conn  *ssh.ServerConn
	proxy atomic.Bool // xpra's channel

	decided chan struct{} // closed once the channel is xpra's, answered or gone
	guarded chan struct{} // closed when guard returned; nil once Read saw it
	head    []byte        // what guard read, for the stream
	headErr error
}

// guardRead is what guard reads at once: an xpra hello's first part.
const guardRead = 4 << 10

// guard reads a channel's first bytes, then waits for the channel's fate:
// xpra's (those bytes are the stream's first, Read), or a probe's
// (dropped). OpenSSH's client sends its stdin right after its exec
// request, before the reply, so data may come before the decision; the
// rest waits in the channel's window (x/crypto/ssh's, 2 MiB) for at most
// the login deadline, which bounds the wait for the exec request.
func (ch *channel) guard() {
	defer close(ch.guarded)
	buf := make([]byte, guardRead)
	n, err := ch.Channel.Read(buf)
	<-ch.decided
	if ch.proxy.Load() {
		ch.head, ch.headErr = buf[:n], err
	}
}

// Read is the stream's: the byte guard took, then the channel.
func (ch *channel) Read(p []byte) (int, error) {
	// Only the stream's reader calls Read, one call at a time.
	if ch.guarded != nil {
		<-ch.guarded
		ch.guarded = nil
	}
	if len(ch.head) > 0 || ch.headErr != nil {
		n := copy(p, ch.head)
		ch.head = ch.head[n:]
		if len(ch.head) > 0 {
			return n, nil
		}
		err := ch.headErr
		ch.head, ch.headErr = nil, nil
		return n, err
	}
	return ch.Channel.Read(p)
}

// Close ends the whole connection: its one xpra session is over.
func (ch *channel) Close() error {
	ch.Channel.Close()
	return ch.conn.Close()
}

// answer sends a command's output and exit status, then closes the
// channel as a finished command's.
func (ch *channel) answer(e Exec) {
	if e.Stdout != "" {
		ch.Channel.Write([]byte(e.Stdout))
	}
	if e.Stderr != "" {
		ch.Channel.Stderr().Write([]byte(e.Stderr))
	}
	ch.Channel.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{e.Status}))
	ch.Channel.CloseWrite()
	ch.Channel.Close()
}

var (
	_ loop.SSHServer = (*Server)(nil)
	_ loop.Stream    = (*channel)(nil)
	_ io.Reader      = (*channel)(nil)
)
