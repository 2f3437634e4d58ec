package bench

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/quic-go/quic-go"

	"github.com/xpraproxy/xpraproxy/relay"
)

// Client transports: how the simulated clients reach the proxy. The gnet
// client engine speaks plain xpra; for TLS and WebSocket a pair of
// goroutines per connection (generator side, not measured as proxy cost)
// bridges it to the real transport, as the HTML5 client would speak it
// (masked frames).
const (
	TransportTCP = "tcp"
	TransportWS  = "ws"
	TransportSSL = "ssl"
	TransportWSS = "wss"
	// TransportQUIC is xpra 6's quic://: WebSocket over HTTP/3, a UDP
	// socket and a QUIC connection per client (docs/quic.md).
	TransportQUIC = "quic"
)

// dialTransport connects to the proxy and returns a plain xpra stream.
func dialTransport(d *net.Dialer, transport, target string) (net.Conn, error) {
	if transport == TransportQUIC {
		return dialQUIC(d, target)
	}
	nc, err := d.Dial("tcp", target)
	if err != nil || transport == TransportTCP || transport == "" {
		return nc, err
	}
	var conn net.Conn = nc
	if transport == TransportSSL || transport == TransportWSS {
		tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return nil, err
		}
		tc.SetDeadline(time.Time{})
		if transport == TransportSSL {
			return relay.Bridge(tc, nil)
		}
		conn = tc
	}
	if _, _, err := (ws.Dialer{Protocols: []string{"binary"}}).Upgrade(conn, &url.URL{Scheme: "ws", Host: target, Path: "/"}); err != nil {
		conn.Close()
		return nil, err
	}
	return wsBridge(conn)
}

// wsBridge frames a plain stream into masked binary frames and back.
func wsBridge(conn net.Conn) (net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	mk := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "ws")
		defer f.Close()
		c, _ := net.FileConn(f)
		return c
	}
	ours, theirs := mk(fds[0]), mk(fds[1])
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := ours.Read(buf)
			if n > 0 {
				f := ws.MaskFrameInPlace(ws.NewBinaryFrame(append([]byte(nil), buf[:n]...)))
				if ws.WriteFrame(conn, f) != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		conn.Close()
	}()
	go func() {
		for {
			data, _, err := wsutil.ReadServerData(conn)
			if err != nil {
				break
			}
			if _, err := ours.Write(data); err != nil {
				break
			}
		}
		ours.Close()
	}()
	return theirs, nil
}

// dialQUIC opens quic:// from the dialer's source address on a UDP socket
// of its own, closed with the connection.
func dialQUIC(d *net.Dialer, target string) (net.Conn, error) {
	la := &net.UDPAddr{}
	if ta, ok := d.LocalAddr.(*net.TCPAddr); ok {
		la.IP = ta.IP
	}
	uc, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: uc}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qs, err := relay.DialQUICStream(ctx, tr, target, &relay.LinkOptions{VerifyNone: true})
	if err != nil {
		tr.Close()
		return nil, err
	}
	return wsBridge(closeBoth{qs, tr})
}

// closeBoth is a connection whose Close also closes its transport.
type closeBoth struct {
	net.Conn
	tr *quic.Transport
}

func (c closeBoth) Close() error {
	err := c.Conn.Close()
	c.tr.Close()
	return err
}

// quicBind in the proxy's arguments stands for its --bind-quic on the
// port its --bind-tcp has (startProxy fills it in).
const quicBind = "--bind-quic=SAME"
