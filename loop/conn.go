package loop

import (
	"errors"
	"io"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

// conn is the one context of every connection the reactor serves: role
// says what the connection is now, and the state that only some roles
// need hangs off pointers that stay nil for the others, so that an idle
// relaying session pays for none of them. A conn is touched only on its
// connection's loop, except where a field says otherwise.
type conn struct {
	role role
	ls   *loopState
	t    *ticket        // client connections accepted here: their place in the caps
	sess *relay.Session // roleSniff, roleClient, roleServer
	ws   *wsConn        // WebSocket framing: a client's, or a ws:// backend's
	tls  *tlsConn       // the TLS record layer, once its handshake is done
	pre  *pre           // until the connection is a session's client or server
	sp   *splice        // roleSplice
}

// role is what a connection is; OnOpen, OnTraffic and OnClose dispatch
// on it and nothing else.
type role uint8

const (
	roleAccepted  role = iota // accepted (acceptLoop), OnOpen not run yet: pre.l
	roleSniff                 // an xpra-looking client whose first bytes are not in yet: sess, pre.l, pre.mode
	roleClient                // an xpra client's session: sess
	roleHandshake             // a TLS handshake running: pre.hs
	roleHTTP                  // HTTP requests: pre.http
	roleServer                // a session's backend: sess (pre.backend until OnOpen)
	roleAdopted               // a client handed over by another process, OnOpen not run yet: pre.handoff
	roleSplice                // one end of a splice to a worker (splice.go): sp
	roleAnchor                // the server's own connection that makes its loop known (anchorLoops)
	roleParking               // gnet's connection of a socket just parked, until its close (park.go): pre.park
	roleResumed               // a parked socket handed back to gnet, OnOpen not run yet: pre.park
)

var roleNames = [...]string{"accepted", "sniff", "client", "tls-handshake", "http", "server", "adopted", "splice", "anchor", "parking", "resumed"}

func (r role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return "role-?"
}

// pre is what a connection needs before it is a session's client or
// server: dropped (nil) once it is one.
type pre struct {
	l       *Listener
	mode    mode
	hs      *tlsHandshake  // roleHandshake
	http    *httpState     // roleHTTP
	backend *relay.Backend // roleServer until OnOpen
	handoff *relay.Handoff // roleAdopted until OnOpen
	park    *parked        // roleParking, roleResumed
}

func connOf(c gnet.Conn) *conn {
	cn, _ := c.Context().(*conn)
	return cn
}

// OnOpen starts what the connection's role needs: a session for an
// accepted client, the relay of an enrolled backend, the adoption of a
// handed-over client, the worker's end of a splice.
func (s *Server) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	cn := connOf(c)
	if cn == nil {
		if c.LocalAddr().String() == s.anchorPath {
			// One of the server's own connections that make every loop
			// known (anchorLoops).
			c.SetContext(&conn{role: roleAnchor})
			s.loopState(c.EventLoop())
			return nil, gnet.None
		}
		s.log.Error("connection without a role", "local", c.LocalAddr())
		return nil, gnet.Close
	}
	now := time.Now()
	cn.ls = s.loopState(c.EventLoop())
	switch cn.role {
	case roleServer:
		b := cn.pre.backend
		cn.pre = nil // the server's hello is not kept for the session's life
		var rc relay.Conn = c
		if b.WS != nil {
			cn.ws = newWSConn(c, frame.AbsMaxPacketSize+1<<20)
			cn.ws.remaining = b.WS.Remaining
			rc = cn.ws
		}
		cn.sess.ServerOpened(rc, b, now)
	case roleAdopted:
		return s.adopted(c, cn, now)
	case roleAccepted:
		l := cn.pre.l
		s.startSession(c.EventLoop(), cn, l.Config, c, now)
		if l.Network == "tcp" {
			cn.role, cn.pre.mode = roleSniff, l.mode()
		} else {
			cn.role, cn.pre = roleClient, nil
		}
		if !cn.t.bind(cn, c) {
			// It made way for a newer connection before it got here.
			s.evicted(cn, c)
		}
	case roleSplice:
		cn.sp.opened(c)
	case roleResumed:
		return nil, s.resumed(c, cn.pre.park)
	default:
		s.log.Error("connection opened in an unexpected role", "role", cn.role.String())
		return nil, gnet.Close
	}
	return nil, gnet.None
}

// OnTraffic feeds the bytes to what the connection is. A TLS
// connection's ciphertext is decrypted first, and everything after sees
// the plaintext (the tlsConn in place of c).
func (s *Server) OnTraffic(c gnet.Conn) gnet.Action {
	cn := connOf(c)
	if cn == nil {
		c.Discard(c.InboundBuffered())
		return gnet.None
	}
	// A client that sent bytes is a step further in its login (admit.go):
	// one atomic load once it is past that.
	cn.t.progress(stageBytes)
	switch cn.role {
	case roleHandshake:
		return s.handshakeTraffic(c, cn)
	case roleSplice:
		return cn.sp.traffic(c, cn)
	case roleParking:
		cn.pre.park.take(c)
		return gnet.None
	}
	now := time.Now()
	if cn.tls == nil {
		act := s.traffic(c, cn, now)
		if act == gnet.None && cn.ls != nil && len(cn.ls.flows) > 0 {
			s.parkSoon(cn, c)
		}
		return act
	}
	err := cn.tls.decrypt()
	act := s.traffic(cn.tls, cn, now)
	if act == gnet.None && err == nil && cn.ls != nil && len(cn.ls.flows) > 0 {
		s.parkSoon(cn, c)
	}
	if act != gnet.None || err == nil {
		return act
	}
	if !errors.Is(err, io.EOF) {
		s.log.Debug("tls stream broken", "peer", c.RemoteAddr().String(), "err", err)
	}
	return gnet.Close
}

// traffic handles a connection's (plaintext) bytes by its role.
func (s *Server) traffic(c gnet.Conn, cn *conn, now time.Time) gnet.Action {
	if cn.role == roleSniff {
		if act, handled := s.sniff(c, cn, now); handled {
			return act
		}
	}
	switch cn.role {
	case roleClient:
		if cn.ws != nil {
			return s.wsTraffic(cn, now)
		}
		cn.sess.ClientTraffic(now)
	case roleHTTP:
		return s.serveHTTP(c, cn, now)
	case roleServer:
		if cn.ws != nil {
			if err := cn.ws.decode(); err != nil {
				cn.ws.Conn.Discard(cn.ws.Conn.InboundBuffered())
				if !errors.Is(err, errWSClosed) {
					s.log.Warn("bad websocket framing from the server", "session", cn.sess.ID, "err", err)
				}
				return gnet.Close
			}
		}
		cn.sess.ServerTraffic(now)
	default:
		c.Discard(c.InboundBuffered())
	}
	return gnet.None
}

// OnClose tells whatever the connection was part of that it is gone.
func (s *Server) OnClose(c gnet.Conn, err error) gnet.Action {
	cn := connOf(c)
	if cn == nil {
		return gnet.None
	}
	switch cn.role {
	case roleSniff, roleClient:
		cn.t.closed()
		cn.sess.OnClientClosed(err)
		s.dropSession(cn)
	case roleServer:
		cn.sess.OnServerClosed(err)
	case roleHTTP:
		cn.t.closed()
		var key gnet.Conn = c
		if cn.tls != nil {
			key = cn.tls
		}
		ls := s.loopState(c.EventLoop())
		delete(ls.pending, key)
		delete(ls.sending, key)
	case roleHandshake:
		cn.pre.hs.closed()
		cn.t.closed()
	case roleSplice:
		cn.sp.closed(cn)
	case roleParking:
		cn.pre.park.take(c)
		cn.pre.park.released = true
		return gnet.None
	case roleResumed:
		return gnet.None
	default:
		cn.t.closed()
	}
	if cn.tls != nil {
		cn.tls.dropBuffers()
	}
	return gnet.None
}

// startSession makes the relay session of a connection that speaks xpra
// (rc is c, or the WebSocket framing over it) and counts it.
func (s *Server) startSession(el gnet.EventLoop, cn *conn, cfg *relay.Config, rc relay.Conn, now time.Time) {
	h := &host{srv: s, el: el, ls: cn.ls, t: cn.t}
	cn.sess = relay.NewSession(s.nextID.Add(1), cfg, h, rc, now)
	if w, ok := rc.(*wsConn); ok {
		cn.ws = w
	}
	cn.ls.sessions[cn.sess] = struct{}{}
	s.count.Add(1)
}

// dropSession takes a client's session out of its loop's sets and the
// counts, adding its last traffic to the totals; idempotent.
func (s *Server) dropSession(cn *conn) {
	sess := cn.sess
	if sess == nil {
		return
	}
	if _, ok := cn.ls.sessions[sess]; !ok {
		return
	}
	delete(cn.ls.sessions, sess)
	delete(cn.ls.urgent, sess)
	s.count.Add(-1)
	c2s, s2c := sess.TrafficDelta()
	s.c2s.Add(c2s)
	s.s2c.Add(s2c)
	if s.opts.OnClosed != nil {
		s.opts.OnClosed(sess.ID)
	}
}

// forget drops the session made at accept for a connection that turned
// out not to speak xpra (HTTP, TLS).
func (s *Server) forget(cn *conn) {
	if _, ok := cn.ls.sessions[cn.sess]; ok {
		delete(cn.ls.sessions, cn.sess)
		delete(cn.ls.urgent, cn.sess)
		s.count.Add(-1)
	}
	cn.sess.Forget()
	cn.sess = nil
}
