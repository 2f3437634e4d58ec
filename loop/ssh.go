package loop

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/xpraproxy/xpraproxy/relay"
)

// SSH (docs/ssh.md). golang.org/x/crypto/ssh needs a net.Conn for the
// connection's whole life and runs goroutines of its own (its key
// exchange and its channel multiplexer), so an SSH client leaves the
// event loop: the loop hands the socket (a duplicate, with the bytes gnet
// had read) to Go's own poller and closes gnet's connection, and a
// goroutine runs the SSH server (package sshd) on it. The channel that
// carries xpra comes back through the stream seam (stream.go): its
// session runs on a loop like any other. The connection keeps the ticket
// it was accepted with, so the caps, the evictions and the login timeout
// apply to the SSH handshake and login as to any other.

// SSHServer terminates SSH for a listener (package sshd implements it).
type SSHServer interface {
	// ServeSSH runs one SSH connection until it ends, on the goroutine
	// that calls it.
	ServeSSH(c SSHConn)
}

// SSHConn is one SSH client connection as the loop hands it over.
type SSHConn struct {
	// Conn is the client's socket, its first bytes included.
	Conn net.Conn
	// Deadline is the login deadline: the handshake, the login and the
	// exec request that starts xpra must all be done by then.
	Deadline time.Time
	// LoginStarted tells the caps that the client began to log in (a
	// login attempt arrived): it makes way for newcomers after those
	// that have not. Safe from any goroutine.
	LoginStarted func()
	// Count records an SSH login's outcome with the handshake outcomes
	// (metrics: "ssh-auth-failed", "ssh-throttled", ...). Safe from any
	// goroutine.
	Count func(result string)
	// Open serves the channel that carries the client's xpra stream
	// (`xpra _proxy`), with the login the SSH server did (nil: none,
	// the xpra challenge logs the client in): once per connection. An
	// error means it was refused (the stream is closed).
	Open func(st Stream, login *relay.TransportLogin) error
}

// sshState is an SSH connection's, once it left the loop: what an
// eviction closes.
type sshState struct {
	nc net.Conn
}

// headConn is a socket whose first bytes were already read by gnet.
type headConn struct {
	net.Conn
	head []byte
}

func (h *headConn) Read(b []byte) (int, error) {
	if len(h.head) > 0 {
		n := copy(b, h.head)
		h.head = h.head[n:]
		if len(h.head) == 0 {
			h.head = nil
		}
		return n, nil
	}
	return h.Conn.Read(b)
}

// maxSSHHead bounds what gnet may hold of an SSH client when it is
// handed over: a banner line and the start of a key exchange.
const maxSSHHead = 64 << 10

// toSSH hands a connection that speaks SSH to its listener's SSH server
// (loop); gnet's connection is closed (the socket lives on in Go's
// poller).
func (s *Server) toSSH(c gnet.Conn, cn *conn) gnet.Action {
	n := c.InboundBuffered()
	if n > maxSSHHead {
		return gnet.Close
	}
	var head []byte
	if n > 0 {
		b, _ := c.Peek(n)
		head = append([]byte(nil), b...)
		c.Discard(n)
	}
	nc, err := detach(c.Fd())
	if err != nil {
		s.log.Warn("cannot take an ssh connection off the loop", "peer", c.RemoteAddr().String(), "err", err)
		return gnet.Close
	}
	l := cn.pre.l
	st := &sshState{nc: nc}
	cn.role, cn.pre = roleSSH, &pre{l: l, ssh: st}
	go s.serveSSH(l, &headConn{Conn: nc, head: head}, cn.t)
	return gnet.Close
}

// detach makes a net.Conn of a duplicate of fd (gnet keeps fd, and
// closes it).
func detach(fd int) (net.Conn, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: duplicate the socket: %w", err)
	}
	f := os.NewFile(uintptr(dup), "ssh")
	defer f.Close() // FileConn made its own duplicate
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("loop: socket to net.Conn: %w", err)
	}
	return nc, nil
}

// serveSSH runs an SSH connection on its own goroutine; the ticket goes
// to the stream of its xpra channel, or is given back when the
// connection ends without one.
func (s *Server) serveSSH(l *Listener, nc net.Conn, t *ticket) {
	var handed atomic.Bool
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic serving an ssh connection", "peer", nc.RemoteAddr().String(), "panic", r, "stack", string(debug.Stack()))
		}
		nc.Close()
		if !handed.Load() {
			t.closed()
		}
	}()
	remote := nc.RemoteAddr()
	l.SSH.ServeSSH(SSHConn{
		Conn:         nc,
		Deadline:     time.Now().Add(l.Config.LoginTimeout),
		LoginStarted: func() { t.progress(stageHello) },
		Count:        s.CountHandshake,
		Open: func(st Stream, login *relay.TransportLogin) error {
			if !handed.CompareAndSwap(false, true) {
				st.Close()
				return fmt.Errorf("loop: ssh: a second xpra channel")
			}
			return s.serveStream(st, StreamOptions{Remote: remote, Config: l.sshConfig, Transport: "ssh", Login: login}, t)
		},
	})
}

// closeSSH ends an SSH connection that made way for a newcomer (loop).
func (st *sshState) evict() {
	st.nc.Close()
}

// sshBanner is how every SSH identification string begins (RFC 4253).
const sshBanner = "SSH-"

// looksSSH: b starts an SSH identification string (or a prefix of one).
func looksSSH(b []byte) bool {
	n := min(len(b), len(sshBanner))
	return n > 0 && string(b[:n]) == sshBanner[:n]
}

var _ io.Reader = (*headConn)(nil)
