package loop

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// TLS on the event loop (docs/memory.md). crypto/tls needs a net.Conn; it
// gets tlsSocket, a view of the gnet connection's ciphertext. The
// handshake runs on a goroutine of its own (crypto/tls makes a handshake's
// errors final, so it cannot be resumed later): its reads wait for the
// bytes OnTraffic hands over, its writes are queued for the loop to send.
// Once the handshake is done the goroutine ends and the socket stays where
// it always was, on its loop: tlsSocket's reads then take what gnet has
// buffered or fail at once with a temporary error, which crypto/tls does
// not make sticky (it keeps a partial record for the next read), and its
// writes go straight to gnet. tlsConn is the decrypted stream the sniffing,
// the WebSocket framing and the relay read like any gnet connection. A
// TLS session pays no goroutine and no second socket; buffers for
// plaintext are borrowed only while data flows.

// maxHandshakeInput bounds the ciphertext waiting for the handshake
// goroutine: a client's first flight is a few KB.
const maxHandshakeInput = 64 << 10

// errWouldBlock is tlsSocket's read on the loop when gnet has nothing
// buffered: temporary, so crypto/tls tries again on the next read.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "loop: tls: no ciphertext buffered" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// tlsSocket is the net.Conn under crypto/tls. Until onLoop is set its
// fields are shared with the handshake goroutine under mu; after, only the
// loop touches it.
type tlsSocket struct {
	c gnet.Conn

	mu     sync.Mutex
	cond   sync.Cond
	in     []byte // ciphertext read by the loop, not yet by crypto/tls
	out    []byte // the handshake's ciphertext, for the loop to write
	closed bool   // the connection is gone (or the handshake gave up)
	done   bool   // the handshake returned; err is its result
	err    error

	onLoop bool
	batch  []byte // records gathered while the loop encrypts one write
	gather bool
}

func newTLSSocket(c gnet.Conn) *tlsSocket {
	s := &tlsSocket{c: c}
	s.cond.L = &s.mu
	return s
}

func (s *tlsSocket) Read(b []byte) (int, error) {
	if s.onLoop {
		if len(s.in) > 0 {
			n := copy(b, s.in)
			s.in = s.in[n:]
			if len(s.in) == 0 {
				s.in = nil
			}
			return n, nil
		}
		if s.c.InboundBuffered() == 0 {
			return 0, errWouldBlock
		}
		return s.c.Read(b) // copies and discards
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.in) == 0 && !s.closed {
		s.cond.Wait()
	}
	if len(s.in) == 0 {
		return 0, io.EOF
	}
	n := copy(b, s.in)
	s.in = s.in[n:]
	if len(s.in) == 0 {
		s.in = nil // the ClientHello's copy is not kept for the session's life
	}
	return n, nil
}

func (s *tlsSocket) Write(b []byte) (int, error) {
	if s.onLoop {
		if s.gather {
			s.batch = append(s.batch, b...)
			return len(b), nil
		}
		return s.c.Write(b)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, net.ErrClosed
	}
	s.out = append(s.out, b...)
	s.mu.Unlock()
	// The loop writes it in order, before anything written after the
	// handshake (a queued async write could be overtaken).
	if err := s.c.Wake(nil); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close ends the connection; the handshake goroutine's pending read
// returns EOF.
func (s *tlsSocket) Close() error {
	if s.onLoop {
		return s.c.Close()
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cond.Broadcast()
	return s.c.Close()
}

func (s *tlsSocket) LocalAddr() net.Addr              { return s.c.LocalAddr() }
func (s *tlsSocket) RemoteAddr() net.Addr             { return s.c.RemoteAddr() }
func (s *tlsSocket) SetDeadline(time.Time) error      { return nil }
func (s *tlsSocket) SetReadDeadline(time.Time) error  { return nil }
func (s *tlsSocket) SetWriteDeadline(time.Time) error { return nil }

// noTickets is cfg without TLS 1.3 session tickets. A ticket is a
// post-handshake message: the client reads it after its handshake is
// done, and xpra 6.x's client reads (a thread of its own) while its
// write thread sends the hello, both on one OpenSSL object, which OpenSSL
// does not allow: now and then the hello is silently dropped and the
// session waits for it until the login timeout (docs/loop.md, "TLS
// session tickets"). xpra's own server sends none for the same reason;
// without them a returning client makes a full handshake.
func noTickets(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	c.SessionTicketsDisabled = true
	return c
}

// tlsHandshake is a connection's TLS handshake in progress.
type tlsHandshake struct {
	sock *tlsSocket
	tc   *tls.Conn
}

// startLoopTLS begins a TLS handshake on c, which stays on its loop.
func (s *Server) startLoopTLS(c gnet.Conn, cn *conn) gnet.Action {
	sock := newTLSSocket(c)
	hs := &tlsHandshake{sock: sock, tc: tls.Server(sock, cn.pre.l.serverTLS)}
	cn.role, cn.pre.hs = roleHandshake, hs
	timeout := min(cn.pre.l.Config.LoginTimeout, s.opts.HTTPTimeout)
	go func() {
		// A TLS handshake needs seconds, not the login timeout: a
		// half-open handshake holds a goroutine.
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := hs.tc.HandshakeContext(ctx)
		cancel()
		sock.mu.Lock()
		sock.done, sock.err = true, err
		sock.mu.Unlock()
		_ = c.Wake(nil)
	}()
	return s.handshakeTraffic(c, cn)
}

// handshakeTraffic passes the client's bytes to the handshake and sends
// what it wrote; once it is done, the decrypted stream is sniffed again.
func (s *Server) handshakeTraffic(c gnet.Conn, cn *conn) gnet.Action {
	hs := cn.pre.hs
	sock := hs.sock
	n := c.InboundBuffered()
	sock.mu.Lock()
	if len(sock.in)+n > maxHandshakeInput {
		sock.mu.Unlock()
		c.Discard(n)
		return gnet.Close
	}
	if n > 0 {
		b, _ := c.Peek(n)
		sock.in = append(sock.in, b...)
		c.Discard(n)
		sock.cond.Broadcast()
	}
	out := sock.out
	sock.out = nil
	done, err := sock.done, sock.err
	sock.mu.Unlock()
	if len(out) > 0 {
		c.Write(out)
	}
	if !done {
		return gnet.None
	}
	if err != nil {
		s.log.Debug("tls handshake failed", "peer", c.RemoteAddr().String(), "err", err)
		return gnet.Close
	}
	// The goroutine has returned: from here on only the loop touches
	// the socket and crypto/tls.
	sock.onLoop = true
	inner := modeInnerAny
	if cn.pre.mode == modeHTTP || cn.pre.mode == modeTLSHTTP {
		inner = modeInnerHTTP
	}
	cn.tls = &tlsConn{Conn: c, tc: hs.tc, sock: sock}
	cn.role, cn.pre.hs, cn.pre.mode = roleSniff, nil, inner
	s.startSession(c.EventLoop(), cn, cn.pre.l.configFor(inner), cn.tls, time.Now())
	return s.OnTraffic(c) // the client may have sent more already
}

// closed: the connection went away during the handshake.
func (hs *tlsHandshake) closed() {
	hs.sock.mu.Lock()
	hs.sock.closed = true
	hs.sock.mu.Unlock()
	hs.sock.cond.Broadcast()
}
