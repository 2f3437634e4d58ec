package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/ssh"

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
	// TransportSSH is ssh:// with a password, the session channel's
	// `xpra _proxy` bridged to the engine (docs/ssh.md): SSH logs the
	// user in, no xpra challenge follows.
	TransportSSH = "ssh"
)

// dialTransport connects to the proxy and returns a plain xpra stream
// (peer and the AES key file are for the AES transports).
func dialTransport(d *net.Dialer, transport, target, user, password, peer, keyFile string) (net.Conn, error) {
	if transport == TransportQUIC {
		return dialQUIC(d, target)
	}
	nc, err := d.Dial("tcp", target)
	if err != nil || transport == TransportTCP || transport == "" {
		return nc, err
	}
	if transport == TransportSSH {
		return dialSSH(nc, target, user, password)
	}
	if isAES(transport) {
		return dialAES(nc, transport, peer, password, keyFile)
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
	ours, theirs, err := socketPair("ws")
	if err != nil {
		return nil, err
	}
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

// dialSSH logs in over SSH on nc and returns the xpra channel as a plain
// stream.
func dialSSH(nc net.Conn, target, user, password string) (net.Conn, error) {
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	conf := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.Password(password)}, HostKeyCallback: ssh.InsecureIgnoreHostKey()}
	sc, chans, reqs, err := ssh.NewClientConn(nc, target, conf)
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c := ssh.NewClient(sc, chans, reqs)
	ch, creqs, err := c.OpenChannel("session", nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	go ssh.DiscardRequests(creqs)
	if ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"xpra _proxy"})); !ok || err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: ssh exec: %v %v", ok, err)
	}
	return streamBridge(ch, c)
}

// streamBridge is a socket whose other end carries rw's bytes both ways
// (two goroutines, generator side); closer ends with it.
func streamBridge(rw io.ReadWriter, closer io.Closer) (net.Conn, error) {
	ours, theirs, err := socketPair("bridge")
	if err != nil {
		return nil, err
	}
	go func() { io.Copy(rw, ours); closer.Close() }()
	go func() { io.Copy(ours, rw); ours.Close() }()
	return theirs, nil
}

// socketPair is a connected pair of unix sockets: the generator's bridges
// keep ours and give theirs to the engine.
func socketPair(name string) (ours, theirs net.Conn, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	mk := func(fd int) (net.Conn, error) {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		return net.FileConn(f)
	}
	if ours, err = mk(fds[0]); err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	if theirs, err = mk(fds[1]); err != nil {
		ours.Close()
		return nil, nil, err
	}
	return ours, theirs, nil
}
