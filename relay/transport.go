package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// Bridge serves a TLS connection with two goroutines copying between it
// and a socketpair, and returns the plaintext end for an event loop
// (gnet has no TLS, and crypto/tls needs a blocking net.Conn). done runs
// when both directions have ended.
func Bridge(tc *tls.Conn, done func()) (net.Conn, error) { return bridgeStream(tc, done) }

// halfCloser is a stream a bridge serves: a TLS connection, a QUIC
// stream (quic.go). CloseWrite ends the direction to the peer; Close
// ends both, and makes a blocked Read return.
type halfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// bridgeStream is Bridge for any halfCloser.
func bridgeStream(tc halfCloser, done func()) (net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("relay: tls bridge: %w", err)
	}
	ours, err := fdConn(fds[0])
	if err != nil {
		syscall.Close(fds[1])
		return nil, err
	}
	theirs, err := fdConn(fds[1])
	if err != nil {
		ours.Close()
		return nil, err
	}
	go func() {
		if done != nil {
			defer done()
		}
		finished := make(chan struct{})
		go func() {
			// decrypted bytes → the loop; EOF becomes a half-close
			pump(ours, tc)
			ours.(*net.UnixConn).CloseWrite()
			close(finished)
		}()
		// the loop's bytes → encrypted to the peer
		pump(tc, ours)
		tc.CloseWrite()
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
		}
		tc.Close()
		ours.Close()
	}()
	return theirs, nil
}

// bigBuffers serve bridges while traffic flows; an idle bridge blocks in
// Read on a small buffer of its own (io.Copy would hold 32 KiB per
// direction for the connection's whole life). The small one only has to
// hold what an idle session exchanges (pings): a read that fills it
// switches to a big one.
const smallPump = 512

var bigBuffers = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func pump(dst io.Writer, src io.Reader) {
	small := make([]byte, smallPump)
	var big *[]byte
	defer func() {
		if big != nil {
			bigBuffers.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
		switch {
		case big == nil && n == len(small):
			big = bigBuffers.Get().(*[]byte)
		case big != nil && n < len(small):
			bigBuffers.Put(big)
			big = nil
		}
	}
}

func fdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "bridge")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("relay: tls bridge: %w", err)
	}
	return c, nil
}

// clientTLS wraps a target connection in TLS as xpra's client would.
func clientTLS(ctx context.Context, conn net.Conn, host string, link *LinkOptions) (*tls.Conn, error) {
	cfg, err := clientTLSConfig(host, link)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// clientTLSConfig is the TLS configuration of xpra's client for host
// with a target's options: the server's certificate is verified unless
// the row says --ssl-server-verify-mode=none.
func clientTLSConfig(host string, link *LinkOptions) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if link != nil {
		cfg.InsecureSkipVerify = link.VerifyNone
		if link.ServerName != "" {
			cfg.ServerName = link.ServerName
		}
		if link.CACerts != "" {
			pem, err := os.ReadFile(link.CACerts)
			if err != nil {
				return nil, err
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("relay: no certificate in %s", link.CACerts)
			}
		}
	}
	return cfg, nil
}

// wsClient is the proxy's side of a ws:// or wss:// target during the
// blocking handshake: xpra packets in binary frames, unmasked as xpra's
// own clients send them (xpra servers accept both). It remembers how much
// of the current frame is unread, for the event loop to carry on.
type wsClient struct {
	conn      net.Conn // reads are exact (headers, then at most the frame's rest): no read-ahead
	remaining int64
	hdr       [ws.MaxHeaderSize]byte
}

// upgradeWS performs the client side of the WebSocket upgrade.
func upgradeWS(conn net.Conn, address, display string) (*wsClient, error) {
	u := &url.URL{Scheme: "ws", Host: address, Path: "/"}
	br, _, err := ws.Dialer{Protocols: []string{"binary"}}.Upgrade(conn, u)
	if err != nil {
		return nil, err
	}
	if br != nil && br.Buffered() > 0 {
		// xpra servers send nothing before the client's hello.
		return nil, errors.New("relay: the websocket server sent data before the hello")
	}
	return &wsClient{conn: conn}, nil
}

func (w *wsClient) Write(p []byte) (int, error) {
	b := w.hdr[:2]
	b[0] = 0x82
	switch n := len(p); {
	case n < 126:
		b[1] = byte(n)
	case n <= 0xffff:
		b = w.hdr[:4]
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = w.hdr[:10]
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	bufs := net.Buffers{b, p}
	if _, err := bufs.WriteTo(w.conn); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsClient) Read(p []byte) (int, error) {
	for w.remaining == 0 {
		h, err := ws.ReadHeader(w.conn)
		if err != nil {
			return 0, err
		}
		switch {
		case h.OpCode.IsControl():
			body := make([]byte, h.Length)
			if _, err := io.ReadFull(w.conn, body); err != nil {
				return 0, err
			}
			if h.Masked {
				ws.Cipher(body, h.Mask, 0)
			}
			if h.OpCode == ws.OpClose {
				return 0, io.EOF
			}
			if h.OpCode == ws.OpPing {
				w.conn.Write(append([]byte{0x8a, byte(len(body))}, body...))
			}
		case h.Masked:
			return 0, errors.New("relay: masked frame from the server")
		default:
			w.remaining = h.Length
		}
	}
	n, err := w.conn.Read(p[:min(int64(len(p)), w.remaining)])
	w.remaining -= int64(n)
	return n, err
}

// WSState is where a ws:// target's stream stands when the event loop
// takes the socket: the unread rest of the current frame.
type WSState struct {
	Remaining int64
}
