package xpratest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/xpraproxy/xpraproxy/internal/xprahello"
)

// The wire behaviour of xpra 6's quic:// client (xpra/net/quic/client.py):
// one QUIC connection, ALPN h3, an extended CONNECT (RFC 9220) with
// :protocol websocket, sec-websocket-version 13 and
// sec-websocket-protocol xpra on :path "/" + display, then RFC 6455
// frames carrying xpra packets in the stream's DATA frames.

// QUICConn is a QUIC connection with an HTTP/3 client on it.
type QUICConn struct {
	Conn   *quic.Conn
	Client *http3.ClientConn
}

// DialQUICConn opens a QUIC connection to addr (HOST:PORT) speaking h3.
func DialQUICConn(addr string, tlsConf *tls.Config) (*QUICConn, error) {
	return DialQUICConnOn(nil, addr, tlsConf)
}

// DialQUICConnOn is DialQUICConn over tr's UDP socket (nil: a new one).
func DialQUICConnOn(tr *quic.Transport, addr string, tlsConf *tls.Config) (*QUICConn, error) {
	tlsConf = tlsConf.Clone()
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conf := &quic.Config{MaxIdleTimeout: 30 * time.Second}
	var c *quic.Conn
	var err error
	if tr == nil {
		c, err = quic.DialAddr(ctx, addr, tlsConf, conf)
	} else {
		var ua *net.UDPAddr
		if ua, err = net.ResolveUDPAddr("udp", addr); err == nil {
			c, err = tr.Dial(ctx, ua, tlsConf, conf)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("xpratest: quic dial %s: %w", addr, err)
	}
	return &QUICConn{Conn: c, Client: (&http3.Transport{}).NewClientConn(c)}, nil
}

// Connect sends the extended CONNECT xpra's client sends, with protocol
// and subprotocol as given (xpra's: "websocket", "xpra"), and returns
// the stream and the server's response.
func (q *QUICConn) Connect(protocol, subprotocol, path string) (*http3.RequestStream, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	str, err := q.Client.OpenRequestStream(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("xpratest: open stream: %w", err)
	}
	host := q.Conn.RemoteAddr().String()
	req := &http.Request{Method: http.MethodConnect, Proto: protocol, Host: host,
		URL: &url.URL{Scheme: "https", Host: host, Path: path},
		Header: http.Header{"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Protocol": {subprotocol},
			"User-Agent": {"xpra/6.5"}}}
	if err := str.SendRequestHeader(req); err != nil {
		return nil, nil, fmt.Errorf("xpratest: CONNECT: %w", err)
	}
	str.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := str.ReadResponse()
	str.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, nil, fmt.Errorf("xpratest: CONNECT response: %w", err)
	}
	return str, resp, nil
}

// DialQUIC connects as xpra 6's quic:// client to addr and returns an
// xpra 6 client on the accepted stream; a refused CONNECT is an error
// naming the status.
func DialQUIC(addr string, tlsConf *tls.Config) (*Client, error) {
	q, err := DialQUICConn(addr, tlsConf)
	if err != nil {
		return nil, err
	}
	return q.XpraClient()
}

// XpraClient opens xpra's WebSocket stream on q and returns an xpra 6
// client on it; closing the client closes q.
func (q *QUICConn) XpraClient() (*Client, error) {
	str, resp, err := q.Connect("websocket", "xpra", "/")
	if err != nil {
		q.Conn.CloseWithError(0, "")
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Sec-Websocket-Protocol") != "xpra" {
		q.Conn.CloseWithError(0, "")
		return nil, fmt.Errorf("xpratest: CONNECT refused: %s", resp.Status)
	}
	conn := &quicStreamConn{RequestStream: str, q: q}
	c := NewClient(conn, &wsStream{Conn: conn})
	c.Writer = xprahello.Writer(xprahello.Gen6, 1)
	return c, nil
}

// quicStreamConn is a request stream as a net.Conn; Close ends the
// connection.
type quicStreamConn struct {
	*http3.RequestStream
	q *QUICConn
}

func (s *quicStreamConn) Close() error {
	s.RequestStream.CancelRead(0)
	s.RequestStream.Close()
	return s.q.Conn.CloseWithError(0, "")
}
func (s *quicStreamConn) LocalAddr() net.Addr  { return s.q.Conn.LocalAddr() }
func (s *quicStreamConn) RemoteAddr() net.Addr { return s.q.Conn.RemoteAddr() }

// quicListener is the Server's listener for scheme quic: an HTTP/3
// server on a UDP port whose accepted WebSocket CONNECTs (xpra 6's
// quic/websocket.py checks: the xpra subprotocol) are its connections.
type quicListener struct {
	pc    net.PacketConn
	h3    *http3.Server
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func listenQUIC(tlsConf *tls.Config) (*quicListener, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &quicListener{pc: pc, conns: make(chan net.Conn), done: make(chan struct{})}
	l.h3 = &http3.Server{TLSConfig: http3.ConfigureTLSConfig(tlsConf), Handler: http.HandlerFunc(l.serveHTTP)}
	go l.h3.Serve(pc)
	return l, nil
}

func (l *quicListener) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect || r.Proto != "websocket" || !strings.Contains(r.Header.Get("Sec-Websocket-Protocol"), "xpra") {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.Header().Set("Sec-Websocket-Protocol", "xpra")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	str := w.(http3.HTTPStreamer).HTTPStream()
	remote, _ := net.ResolveUDPAddr("udp", r.RemoteAddr)
	c := &quicServerConn{Stream: str, local: l.pc.LocalAddr(), remote: remote}
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *quicListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *quicListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.h3.Close()
		l.pc.Close()
	})
	return nil
}

func (l *quicListener) Addr() net.Addr { return l.pc.LocalAddr() }

// quicServerConn is an accepted stream as a net.Conn.
type quicServerConn struct {
	*http3.Stream
	local, remote net.Addr
}

func (c *quicServerConn) Close() error {
	c.Stream.CancelRead(0)
	return c.Stream.Close()
}
func (c *quicServerConn) LocalAddr() net.Addr  { return c.local }
func (c *quicServerConn) RemoteAddr() net.Addr { return c.remote }
