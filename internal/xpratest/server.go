package xpratest

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/internal/xprahello"
)

// ServerOptions say how a Server behaves.
type ServerOptions struct {
	// Scheme is how clients reach it: tcp (default), ssl, ws, wss or
	// quic (TLS with a self-signed certificate; ws after a WebSocket
	// upgrade, as xpra's servers accept on their tcp sockets; quic as
	// xpra 6's --bind-quic: quic.go).
	Scheme string
	// Password, when set, is the server's own: every client is
	// challenged (hmac, as xpra's server does) and must answer it.
	Password string
	// Silent servers accept and never answer (a backend that hangs).
	Silent bool
	// Only, when set, is the one packet encoder the server speaks, as a
	// real server of one xpra generation: a hello in another is refused
	// with that generation's words (a proxy then bridges).
	Only frame.Encoding
}

// Server is a minimal xpra server. It answers a hello with a hello of the
// client's generation, pings with ping_echo (with the source id), and
// info-request with info-response; and three test commands: ["stream", n,
// size] sends n draw packets of size bytes as raw chunks, ["big"] one
// large main packet, ["bye"] a disconnect ("going away") before closing.
// It records the hellos and the frame headers it received.
type Server struct {
	opts ServerOptions
	ln   net.Listener
	tls  *tls.Config

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	hellos []frame.Dict
	frames []frame.Header
	ended  chan struct{}
	// uploaded counts the payload bytes of "upload" packets received.
	uploaded atomic.Int64
}

// StartServer listens on a free loopback port.
func StartServer() (*Server, error) { return StartServerWith(ServerOptions{}) }

// StartSilentServer accepts connections and never says anything.
func StartSilentServer() (*Server, error) { return StartServerWith(ServerOptions{Silent: true}) }

// StartServerOver is a server reached over scheme.
func StartServerOver(scheme string) (*Server, error) {
	return StartServerWith(ServerOptions{Scheme: scheme})
}

// NewServer starts a server for a test, which fails if it cannot, and
// closes it when the test ends.
func NewServer(t testing.TB, o ServerOptions) *Server {
	t.Helper()
	s, err := StartServerWith(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// StartServerWith starts a server with options o.
func StartServerWith(o ServerOptions) (*Server, error) {
	if o.Scheme == "" {
		o.Scheme = "tcp"
	}
	s := &Server{opts: o, conns: map[net.Conn]struct{}{}, ended: make(chan struct{}, 1024)}
	if o.Scheme == "ssl" || o.Scheme == "wss" || o.Scheme == "quic" {
		var err error
		if s.tls, err = selfsigned.Config(); err != nil {
			return nil, err
		}
	}
	if o.Scheme == "quic" {
		ln, err := listenQUIC(s.tls)
		if err != nil {
			return nil, err
		}
		s.ln, s.tls = ln, nil // QUIC did the TLS
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		s.ln = ln
	}
	go s.accept()
	return s, nil
}

// Addr is host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server as a displays entry.
func (s *Server) URL() string { return s.opts.Scheme + "://" + s.Addr() + "/" }

// Close stops listening and drops every connection (a killed server).
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

// Hellos are the hellos received so far (the last one of each login).
func (s *Server) Hellos() []frame.Dict {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]frame.Dict(nil), s.hellos...)
}

// Frames are the headers of the frames received after each login.
func (s *Server) Frames() []frame.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]frame.Header(nil), s.frames...)
}

// Ended receives once for each connection that ended.
func (s *Server) Ended() <-chan struct{} { return s.ended }

// Uploaded is the payload bytes of the "upload" packets received so far.
func (s *Server) Uploaded() int64 { return s.uploaded.Load() }

func (s *Server) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *Server) serve(c net.Conn) {
	raw := c
	defer func() {
		raw.Close()
		s.mu.Lock()
		delete(s.conns, raw)
		s.mu.Unlock()
		select {
		case s.ended <- struct{}{}:
		default:
		}
	}()
	if s.tls != nil {
		tc := tls.Server(c, s.tls)
		if err := tc.Handshake(); err != nil {
			return
		}
		c = tc
	}
	if s.opts.Scheme == "ws" || s.opts.Scheme == "wss" {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		c = &wsServerStream{Conn: c}
	}
	if s.opts.Scheme == "quic" {
		c = &wsServerStream{Conn: c} // the CONNECT was the upgrade
	}
	if s.opts.Silent {
		io.Copy(io.Discard, c)
		return
	}
	sc := &serverConn{srv: s, c: c, r: frame.Reader{MaxPacketSize: frame.AbsMaxPacketSize}}
	sc.run()
}

// serverConn is one client of a Server.
type serverConn struct {
	srv    *Server
	c      net.Conn
	r      frame.Reader
	w      frame.Writer
	ch     *authn.Challenge
	authed bool
}

// next reads one frame, so that its header can be recorded; the packet
// is nil for a chunk frame.
func (sc *serverConn) next() (frame.Header, frame.Packet, error) {
	var hdr [frame.HeaderSize]byte
	if _, err := io.ReadFull(sc.c, hdr[:]); err != nil {
		return frame.Header{}, nil, err
	}
	size, h, err := frame.FrameLen(hdr[:], 0)
	if err != nil {
		return h, nil, err
	}
	buf := make([]byte, size)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(sc.c, buf[frame.HeaderSize:]); err != nil {
		return h, nil, err
	}
	p, _, err := sc.r.Next(buf)
	return h, p, err
}

func (sc *serverConn) send(p frame.Packet) error {
	b, err := sc.w.AppendPacket(nil, p)
	if err == nil {
		_, err = sc.c.Write(b)
	}
	return err
}

func (sc *serverConn) run() {
	for {
		h, p, err := sc.next()
		if err != nil {
			return
		}
		if p == nil {
			if sc.authed {
				sc.record(h)
			}
			continue
		}
		if !sc.authed {
			if p.Type() == "hello" && !sc.hello(p) {
				return
			}
			continue
		}
		sc.record(h)
		if !sc.handle(p) {
			return
		}
	}
}

func (sc *serverConn) record(h frame.Header) {
	sc.srv.mu.Lock()
	sc.srv.frames = append(sc.srv.frames, h)
	sc.srv.mu.Unlock()
}

// hello answers a client hello: a challenge first when the server has a
// password, then its own hello in the client's encoding and compression.
func (sc *serverConn) hello(p frame.Packet) bool {
	if only := sc.srv.opts.Only; only != 0 && sc.r.Header().Flags.Encoding() != only {
		why := "disconnect: invalid packet format, 'rencode' decoder is not available\n"
		if only == frame.Rencode {
			why = "disconnect: invalid packet format, failed to parse rencodeplus packet\n"
		}
		sc.c.Write([]byte(why))
		return false
	}
	caps, _ := p[1].(frame.Dict)
	level := 0
	if l, ok := caps.Int("compression_level"); ok && caps.Has("lz4") {
		level = int(l)
	}
	sc.w = xprahello.Writer(xprahello.Of(sc.r.Header().Flags.Encoding()), level)
	sc.srv.mu.Lock()
	sc.srv.hellos = append(sc.srv.hellos, caps)
	sc.srv.mu.Unlock()
	if pw := sc.srv.opts.Password; pw != "" {
		if sc.ch == nil {
			sc.ch, _ = authn.NewChallenge(caps.Texts("digest"), caps.Texts("salt-digest"), false)
			if sc.ch == nil {
				sc.send(frame.Packet{"disconnect", "authentication failed", "no usable digest"})
				return false
			}
			sc.send(frame.Packet{"challenge", sc.ch.ServerSalt, "", string(sc.ch.Digest), string(sc.ch.SaltDigest), "password"})
			return true
		}
		resp, _ := caps.Text("challenge_response")
		salt, _ := caps.Get("challenge_client_salt")
		cs, _ := frame.AsText(salt)
		if v := sc.ch.Verifier([]byte(resp), []byte(cs)); v == nil || !v([]byte(pw)) {
			sc.send(frame.Packet{"disconnect", "authentication failed"})
			return false
		}
	}
	h := xprahello.Server(sc.r.Header().Flags.Encoding())
	h.Set("session-type", "xpratest")
	h.Set("ping-echo-sourceid", true)
	h.Set("aliases", frame.NewDict("draw", 35))
	h.Set("padding", strings.Repeat("x", 2000)) // a hello larger than one small read
	sc.authed = true
	if sc.send(frame.Packet{"hello", h}) != nil {
		return false
	}
	if sc.srv.opts.Only == frame.RencodePlus {
		// A 6.x server's encodings follow its hello.
		return sc.send(frame.Packet{"encodings", frame.NewDict("encodings", frame.NewDict("", []any{"rgb24", "png"}))}) == nil
	}
	return true
}

// handle answers one packet after the login; false ends the connection.
func (sc *serverConn) handle(p frame.Packet) bool {
	switch p.Type() {
	case "ping":
		echo := frame.Packet{"ping_echo", p[1], 0, 0, 0, 0}
		if len(p) >= 4 {
			echo = append(echo, p[3]) // ping-echo-sourceid
		}
		return sc.send(echo) == nil
	case "info-request":
		info := frame.NewDict("server", frame.NewDict("type", "xpratest"))
		if sc.srv.opts.Only == frame.RencodePlus {
			// 6.x info has None and floats (no 3.1 bencoder writes them).
			info.Set("load", []any{0.25, nil, 1.5})
			info.Set("none", nil)
		}
		return sc.send(frame.Packet{"info-response", info}) == nil
	case "stream":
		count, _ := frame.AsInt(p[1])
		size, _ := frame.AsInt(p[2])
		for i := range count {
			data := bytes.Repeat([]byte{byte(i)}, int(size))
			if sc.send(frame.Packet{"draw", 1, 0, 0, 10, 10, "rgb24", frame.Compressed{Data: data}, i, 40, frame.NewDict("lz4", 1)}) != nil {
				return false
			}
		}
	case "nap":
		// Stop reading for a while: the proxy's flow control slows
		// the client meanwhile.
		ms, _ := frame.AsInt(p[1])
		time.Sleep(time.Duration(ms) * time.Millisecond)
	case "upload":
		data, _ := p[1].([]byte)
		sc.srv.uploaded.Add(int64(len(data)))
	case "big":
		return sc.send(frame.Packet{"big", strings.Repeat("abcdefgh", 1000)}) == nil
	case "bye":
		sc.send(frame.Packet{"disconnect", "server shutdown", "going away"})
		return false
	case "disconnect":
		return false
	}
	return true
}
