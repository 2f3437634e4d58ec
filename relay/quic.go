package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/xpraproxy/xpraproxy/internal/disconnect"
)

// A quic:// target is reached as xpra 6's client does
// (xpra/net/quic/client.py): one QUIC connection with ALPN h3, an
// extended CONNECT (RFC 9220) with :protocol websocket and the xpra
// subprotocol, then WebSocket frames in the stream's DATA frames. After
// the handshake the stream is bridged to a socketpair like a TLS target,
// so the loop relays a socket carrying WebSocket frames (wss://'s
// state).

// backendQUICConfig bounds the proxy's own QUIC connections to servers.
var backendQUICConfig = quic.Config{
	MaxIdleTimeout:                 60 * time.Second,
	KeepAlivePeriod:                15 * time.Second,
	MaxIncomingStreams:             4, // a server's substreams are off by default
	MaxIncomingUniStreams:          8,
	InitialStreamReceiveWindow:     256 << 10,
	MaxStreamReceiveWindow:         1 << 20,
	InitialConnectionReceiveWindow: 512 << 10,
	MaxConnectionReceiveWindow:     2 << 20,
}

// dialQUICBackend connects to a quic:// target and logs in.
func dialQUICBackend(cfg DialConfig, deadline time.Time) (*Backend, error) {
	host, _, _ := net.SplitHostPort(cfg.Address)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	qs, err := dialQUICStream(ctx, nil, cfg.Address, host, cfg.Link)
	if err != nil {
		return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "session not found error", Message: "QUIC connection to the server failed", Err: err}
	}
	qs.SetDeadline(deadline)
	wc := &wsClient{conn: qs}
	b, err := handshake(wc, cfg)
	if err != nil {
		qs.Close()
		return nil, err
	}
	qs.SetDeadline(time.Time{})
	b.WS = &WSState{Remaining: wc.remaining}
	if b.Conn, err = bridgeStream(qs, nil); err != nil {
		qs.Close()
		return nil, &disconnect.Error{Stage: disconnect.Backend, Reason: "server error", Message: "cannot relay the QUIC stream", Err: err}
	}
	return b, nil
}

// DialQUICStream opens xpra's quic:// WebSocket stream to address over
// tr's UDP socket (nil: a socket of its own): a net.Conn carrying
// WebSocket frames, whose Close ends the QUIC connection. For load
// generators and tests; the relay's own dials use it through Dial.
func DialQUICStream(ctx context.Context, tr *quic.Transport, address string, link *LinkOptions) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(address)
	return dialQUICStream(ctx, tr, address, host, link)
}

// dialQUICStream opens the connection and the WebSocket stream.
func dialQUICStream(ctx context.Context, tr *quic.Transport, address, host string, link *LinkOptions) (*quicStream, error) {
	tlsConf, err := clientTLSConfig(host, link)
	if err != nil {
		return nil, err
	}
	tlsConf.MinVersion = 0 // QUIC is TLS 1.3
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	conf := backendQUICConfig
	var c *quic.Conn
	if tr == nil {
		c, err = quic.DialAddr(ctx, address, tlsConf, &conf)
	} else {
		var ua *net.UDPAddr
		if ua, err = net.ResolveUDPAddr("udp", address); err == nil {
			c, err = tr.Dial(ctx, ua, tlsConf, &conf)
		}
	}
	if err != nil {
		return nil, err
	}
	cc := (&http3.Transport{}).NewClientConn(c)
	str, err := cc.OpenRequestStream(ctx)
	if err != nil {
		c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		return nil, err
	}
	qs := &quicStream{RequestStream: str, conn: c}
	u := &url.URL{Scheme: "https", Host: address, Path: "/"}
	req := &http.Request{Method: http.MethodConnect, Proto: "websocket", Host: address, URL: u,
		Header: http.Header{"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Protocol": {"xpra"},
			"User-Agent": {"xpraproxy/" + Version}}}
	if dl, ok := ctx.Deadline(); ok {
		qs.SetDeadline(dl)
	}
	if err := str.SendRequestHeader(req); err != nil {
		qs.Close()
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	resp, err := str.ReadResponse()
	if err != nil {
		qs.Close()
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		qs.Close()
		return nil, fmt.Errorf("the server refused the websocket: %s", resp.Status)
	}
	if resp.Header.Get("Sec-Websocket-Protocol") != "xpra" {
		qs.Close()
		return nil, errors.New("the server did not accept the xpra websocket subprotocol")
	}
	return qs, nil
}

// quicStream is a target's stream as a net.Conn (its deadlines are the
// stream's) and a halfCloser for the bridge: CloseWrite is the stream's
// FIN, Close ends the connection, which carries nothing else.
type quicStream struct {
	*http3.RequestStream
	conn *quic.Conn
}

func (q *quicStream) CloseWrite() error { return q.RequestStream.Close() }

func (q *quicStream) Close() error {
	q.RequestStream.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
	return q.conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
}

func (q *quicStream) LocalAddr() net.Addr  { return q.conn.LocalAddr() }
func (q *quicStream) RemoteAddr() net.Addr { return q.conn.RemoteAddr() }
