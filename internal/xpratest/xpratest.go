// Package xpratest is a harness for tests that talk xpra to a proxy: a
// minimal xpra server (hello, ping echoes, info responses) and a minimal
// client (hello, challenge, pings), both over real sockets. It stands in
// for the real peers where a test needs thousands of connections or
// exact control of the bytes; the interop tests use the real xpra.
package xpratest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
)

// Server is a minimal xpra server: it answers a hello with its own, pings
// with ping_echo and info-request with info-response.
type Server struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// Silent servers accept and never answer (a backend that hangs).
	silent bool
	// scheme is how clients reach it: tcp, ssl, ws or wss.
	scheme string
	tls    *tls.Config
}

// StartServer listens on a free loopback port.
func StartServer() (*Server, error) { return start(false) }

// StartSilentServer accepts connections and never says anything.
func StartSilentServer() (*Server, error) { return start(true) }

func start(silent bool) (*Server, error) { return startOver(silent, "tcp", nil) }

func startOver(silent bool, scheme string, tc *tls.Config) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, conns: map[net.Conn]struct{}{}, silent: silent, scheme: scheme, tls: tc}
	go s.accept()
	return s, nil
}

// StartServerOver is a server reached over scheme: "ssl" and "wss" with a
// self-signed certificate, "ws" and "wss" after a WebSocket upgrade (as
// xpra's servers accept on their tcp sockets).
func StartServerOver(scheme string) (*Server, error) {
	var tc *tls.Config
	if scheme == "ssl" || scheme == "wss" {
		var err error
		if tc, err = selfsigned.Config(); err != nil {
			return nil, err
		}
	}
	return startOver(false, scheme, tc)
}

// Addr is host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server as a displays entry.
func (s *Server) URL() string { return s.scheme + "://" + s.Addr() + "/" }

// Close stops listening and drops every connection (a killed server).
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

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
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	if s.tls != nil {
		tc := tls.Server(c, s.tls)
		if err := tc.Handshake(); err != nil {
			return
		}
		c = tc
	}
	if s.scheme == "ws" || s.scheme == "wss" {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		c = &wsServerStream{Conn: c}
	}
	if s.silent {
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}
	r := frame.NewStreamReader(c, 0)
	var w frame.Writer
	for {
		p, err := r.ReadPacket()
		if err != nil {
			return
		}
		w.Encoding = r.Header().Flags.Encoding()
		var out frame.Packet
		switch p.Type() {
		case "hello":
			out = frame.Packet{"hello", frame.NewDict("version", "3.1.3", "rencode", true, "lz4", true,
				"compression_level", 1, "session-type", "xpratest", "ping-echo-sourceid", true)}
		case "ping":
			out = frame.Packet{"ping_echo", p[1], 0, 0, 0, 0}
		case "info-request":
			out = frame.Packet{"info-response", frame.NewDict("server", frame.NewDict("type", "xpratest"))}
		case "disconnect":
			return
		default:
			continue
		}
		b, err := w.AppendPacket(nil, out)
		if err != nil {
			return
		}
		if _, err := c.Write(b); err != nil {
			return
		}
	}
}

// Client is a minimal xpra 3.1 client.
type Client struct {
	Conn net.Conn
	r    *frame.StreamReader
	w    frame.Writer
}

// Dial connects to addr from the loopback address source ("" for any).
func Dial(addr, source string) (*Client, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Client{Conn: c, r: frame.NewStreamReader(c, 0), w: frame.Writer{Encoding: frame.Rencode, Compression: frame.AlgoLZ4 | 1}}, nil
}

// Hello is a 3.1-style client hello for user.
func Hello(user string) frame.Dict {
	return frame.NewDict("version", "3.1.3", "username", user, "rencode", true,
		"digest", []any{"hmac", "hmac+sha256", "hmac+sha512"}, "salt-digest", []any{"hmac+sha256", "hmac+sha512"},
		"compression_level", 1, "lz4", true)
}

// Send writes one packet.
func (c *Client) Send(p frame.Packet) error {
	b, err := c.w.AppendPacket(nil, p)
	if err != nil {
		return err
	}
	_, err = c.Conn.Write(b)
	return err
}

// Recv reads one packet within timeout.
func (c *Client) Recv(timeout time.Duration) (frame.Packet, error) {
	c.Conn.SetReadDeadline(time.Now().Add(timeout))
	return c.r.ReadPacket()
}

// Login sends hello (Hello(user) when nil), answers the challenge with
// password, and returns the proxy's first packet after it: the server's
// hello, or a disconnect.
func (c *Client) Login(user, password string, hello frame.Dict) (frame.Packet, error) {
	if hello == nil {
		hello = Hello(user)
	}
	if err := c.Send(frame.Packet{"hello", hello}); err != nil {
		return nil, err
	}
	p, err := c.Recv(10 * time.Second)
	if err != nil || p.Type() != "challenge" {
		return p, err
	}
	hello, err = AnswerChallenge(hello, p, password)
	if err != nil {
		return nil, err
	}
	if err := c.Send(frame.Packet{"hello", hello}); err != nil {
		return nil, err
	}
	return c.Recv(10 * time.Second)
}

// AnswerChallenge is hello again with the answer to a challenge packet
// ["challenge", salt, caps, digest, salt-digest, prompt], as xpra's
// client computes it.
func AnswerChallenge(hello frame.Dict, ch frame.Packet, password string) (frame.Dict, error) {
	if len(ch) < 5 {
		return nil, fmt.Errorf("xpratest: short challenge %v", ch)
	}
	salt, _ := frame.AsBytes(ch[1])
	d, _ := frame.AsText(ch[3])
	sd, _ := frame.AsText(ch[4])
	resp, cs, err := authn.Response([]byte(password), salt, authn.Digest(d), authn.Digest(sd))
	if err != nil {
		return nil, err
	}
	h := append(frame.Dict(nil), hello...)
	h.Set("challenge_response", string(resp))
	h.Set("challenge_client_salt", cs)
	return h, nil
}

// Ping sends a ping and waits for its echo, skipping other packets (the
// proxy's own pings are answered).
func (c *Client) Ping(timeout time.Duration) error {
	now := time.Now().UnixMilli()
	if err := c.Send(frame.Packet{"ping", now, 0, "xpratest"}); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p, err := c.Recv(time.Until(deadline))
		if err != nil {
			return err
		}
		switch p.Type() {
		case "ping_echo":
			if v, ok := p[1].(int64); ok && v == now {
				return nil
			}
		case "ping":
			c.Send(frame.Packet{"ping_echo", p[1], 0, 0, 0, 0})
		case "disconnect":
			return fmt.Errorf("xpratest: disconnected: %v", p)
		}
	}
	return errors.New("xpratest: no ping echo")
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }
