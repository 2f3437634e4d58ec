// Package quicfront is the proxy's UDP front door: xpra's quic:// (a
// WebSocket over HTTP/3, RFC 9220) and the HTML5 client's files over
// HTTP/3, on quic-go and its http3 package. A session's stream goes to the
// relay through loop.Server.ServeStream, which frames it as WebSocket and,
// as root, splices it to a worker: the QUIC connection, its keys and the
// UDP socket stay in the process that holds the certificate.
//
// quic-go runs goroutines of its own per connection (it will not run on
// an external event loop: quic-go #3474), so what a connection may hold is
// bounded here through quic.Config (streams, flow-control windows, idle
// timeout) and the front door's own counts (connections without a session
// per address and in all, the time a connection has to open one). Retry
// (RFC 9000 8.1.2) validates source addresses once many handshakes are
// pending, so the port is no amplifier. docs/quic.md has the design.
package quicfront

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/webtransport-go"

	"github.com/xpraproxy/xpraproxy/loop"
	"github.com/xpraproxy/xpraproxy/relay"
)

// Options configure one QUIC listener.
type Options struct {
	// Address is HOST:PORT of the UDP socket (ignored with Conn).
	Address string
	// Conn is a UDP socket already bound (tests, inherited sockets).
	Conn net.PacketConn
	// TLS holds the certificate (--ssl-cert/--ssl-key); the h3 ALPN is
	// added here.
	TLS *tls.Config
	// Config is the sessions' configuration (the listener's modules).
	Config *relay.Config
	// HTML is the HTML5 client's directory served by GET ("": none).
	HTML string
	// Streams relays the sessions and serves the files' cache.
	Streams *loop.Server
	// MaxPerSource bounds the connections of one address that have no
	// session yet (default 8); MaxPending all such connections (default
	// 1024). Beyond them a connection attempt is refused.
	MaxPerSource, MaxPending int
	// RetryAbove: while more connections than this have no session,
	// new ones must first prove their address with a Retry (default 16;
	// negative: always).
	RetryAbove int
	// LoginTimeout is how long a connection may go without opening its
	// session (default 10 s); it also bounds reading a request's headers.
	LoginTimeout time.Duration
	// IdleTimeout ends a silent connection (default 30 s); keep-alives
	// go out at a third of it, so a live peer is never idle.
	IdleTimeout time.Duration
	Log         *slog.Logger
}

// Bounds on what one QUIC connection may hold (docs/quic.md).
const (
	// One session stream, a few file requests of the HTML5 client.
	maxStreams = 8
	// HTTP/3's control and QPACK streams, with room for a peer's extras.
	maxUniStreams = 8
	// Flow control: at most this much unread data per stream and per
	// connection waits in quic-go; the relay's stream window (1 MiB)
	// sits above it.
	initialStreamWindow = 256 << 10
	maxStreamWindow     = 1 << 20
	initialConnWindow   = 512 << 10
	maxConnWindow       = 2 << 20
	// HTTP/3 request headers (QPACK decoded).
	maxHeaderBytes = 16 << 10
)

// Server is one UDP socket's QUIC listener.
type Server struct {
	opts Options
	pc   net.PacketConn
	own  bool // pc was opened here
	tr   *quic.Transport
	h3   *http3.Server
	wt   *webtransport.Server // serves each connection: WebTransport sessions and h3's requests
	log  *slog.Logger

	mu        sync.Mutex
	perSource map[string]int
	pending   atomic.Int64 // connections without a session
	ln        *quic.Listener
	closed    bool

	// Counters (any goroutine).
	Refused, Retried, Sessions, TimedOut atomic.Int64
}

// Listen opens the UDP socket (unless o.Conn is one) and prepares the
// listener; Serve runs it.
func Listen(o Options) (*Server, error) {
	if o.TLS == nil || len(o.TLS.Certificates) == 0 && o.TLS.GetCertificate == nil {
		return nil, errors.New("quic: a certificate is needed (--ssl-cert)")
	}
	if o.Streams == nil || o.Config == nil {
		return nil, errors.New("quic: no stream server or session config")
	}
	if o.MaxPerSource <= 0 {
		o.MaxPerSource = 8
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 1024
	}
	if o.RetryAbove == 0 {
		o.RetryAbove = 16
	}
	if o.LoginTimeout <= 0 {
		o.LoginTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Server{opts: o, pc: o.Conn, log: o.Log, perSource: map[string]int{}}
	if s.pc == nil {
		pc, err := net.ListenPacket("udp", o.Address)
		if err != nil {
			return nil, fmt.Errorf("quic: %w", err)
		}
		s.pc, s.own = pc, true
	}
	s.tr = &quic.Transport{
		Conn:                s.pc,
		VerifySourceAddress: s.needRetry,
		ConnContext:         s.admit,
	}
	s.h3 = &http3.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: o.LoginTimeout,
		Logger:            o.Log,
	}
	// Origins: a page of the proxy's own (same host and port); a
	// browser elsewhere is refused as cross-site.
	s.wt = &webtransport.Server{H3: s.h3, ReorderingTimeout: 2 * time.Second}
	return s, nil
}

// Addr is the UDP socket's address.
func (s *Server) Addr() net.Addr { return s.pc.LocalAddr() }

// quicConfig bounds every connection.
func (s *Server) quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           min(s.opts.LoginTimeout, 5*time.Second),
		MaxIdleTimeout:                 s.opts.IdleTimeout,
		KeepAlivePeriod:                s.opts.IdleTimeout / 3,
		MaxIncomingStreams:             maxStreams,
		MaxIncomingUniStreams:          maxUniStreams,
		InitialStreamReceiveWindow:     initialStreamWindow,
		MaxStreamReceiveWindow:         maxStreamWindow,
		InitialConnectionReceiveWindow: initialConnWindow,
		MaxConnectionReceiveWindow:     maxConnWindow,
		// WebTransport needs both (webtransport-go checks them); xpra's
		// datagrams stay unused.
		EnableDatagrams:                  true,
		EnableStreamResetPartialDelivery: true,
	}
}

// Serve accepts connections until Close; it returns nil after Close.
func (s *Server) Serve() error {
	tlsConf := http3.ConfigureTLSConfig(s.opts.TLS.Clone())
	ln, err := s.tr.Listen(tlsConf, s.quicConfig())
	if err != nil {
		return fmt.Errorf("quic: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		c, err := ln.Accept(context.Background())
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("quic: accept: %w", err)
		}
		s.serveConn(c)
	}
}

// serveConn runs HTTP/3 on an accepted connection, and ends it if no
// session opens in time.
func (s *Server) serveConn(c *quic.Conn) {
	cs := stateOf(c.Context())
	if cs == nil {
		c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeInternalError), "no state")
		return
	}
	cs.conn.Store(c)
	t := time.AfterFunc(s.opts.LoginTimeout, func() {
		if !cs.session.Load() {
			s.TimedOut.Add(1)
			c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "no session opened in time")
		}
	})
	context.AfterFunc(c.Context(), func() { t.Stop() })
	go func() {
		// It returns when the connection ends; a handler's panic is
		// recovered by http3 and ends that request only.
		if err := s.wt.ServeQUICConn(c); err != nil {
			s.log.Debug("quic connection ended", "remote", c.RemoteAddr().String(), "err", err)
		}
	}()
}

// Close stops accepting and closes every connection and the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	ln := s.ln
	s.mu.Unlock()
	s.wt.Close()
	s.h3.Close()
	if ln != nil {
		ln.Close()
	}
	err := s.tr.Close()
	if s.own {
		s.pc.Close()
	}
	return err
}
