package loop

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/panjf2000/gnet/v2"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/selfsigned"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// startOnePort runs one tcp listener that sniffs xpra, HTTP/WebSocket and
// TLS, serving html as the HTML5 client's directory.
func startOnePort(t *testing.T, fs *xpratest.Server, html string) string {
	t.Helper()
	addr, _ := startOnePortServer(t, fs, html)
	return addr
}

// startOnePortServer is startOnePort with the proxy's Server.
func startOnePortServer(t *testing.T, fs *xpratest.Server, html string) (string, *Server) {
	t.Helper()
	tlsCfg, err := selfsigned.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Limits: relay.Limits{LoginTimeout: 2 * time.Second, ChallengeTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second, MaxPacketSize: 1 << 20}}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort())
	srv := New([]Listener{{Network: "tcp", Address: addr, Kind: "tcp", Config: &cfg, TLS: tlsCfg, HTML: html}},
		Options{HTTPTimeout: time.Second})
	errc := make(chan error, 1)
	go func() { errc <- srv.Run() }()
	<-srv.Ready()
	t.Cleanup(func() { srv.Stop(context.Background()); <-errc })
	return addr, srv
}

// wsStream is an xpra stream over a WebSocket client connection.
type wsStream struct {
	c      net.Conn
	masked bool
	r      *wsutil.Reader
}

func (w *wsStream) Read(p []byte) (int, error) {
	for {
		n, err := w.r.Read(p)
		if n > 0 {
			return n, nil
		}
		if err == wsutil.ErrNoFrameAdvance || err == io.EOF {
			h, err := w.r.NextFrame()
			if err != nil {
				return 0, err
			}
			if h.OpCode.IsControl() {
				w.r.Discard()
				if h.OpCode == ws.OpClose {
					return 0, io.EOF
				}
			}
			continue
		}
		return n, err
	}
}

// Write sends p split into two frames (a fragment and its continuation),
// masked like the HTML5 client or unmasked like xpra's python client.
func (w *wsStream) Write(p []byte) (int, error) {
	half := len(p) / 2
	for i, part := range [][]byte{p[:half], p[half:]} {
		op := ws.OpBinary
		if i == 1 {
			op = ws.OpContinuation
		}
		f := ws.NewFrame(op, i == 1, append([]byte(nil), part...))
		if w.masked {
			f = ws.MaskFrameInPlace(f)
		}
		if err := ws.WriteFrame(w.c, f); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func dialWS(t *testing.T, c net.Conn, masked bool) *testClient {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _, err := ws.Dialer{Protocols: []string{"binary"}, NetDial: func(context.Context, string, string) (net.Conn, error) {
		return c, nil
	}}.Upgrade(c, mustURL("ws://127.0.0.1/"))
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	s := &wsStream{c: c, masked: masked, r: &wsutil.Reader{Source: c, State: ws.StateClientSide}}
	return newTestClient(c, s)
}

func TestOnePortTransports(t *testing.T) {
	fs := startFakeServer(t, "")
	html := t.TempDir()
	os.WriteFile(filepath.Join(html, "index.html"), []byte("<html>xpra html5</html>"), 0o644)
	addr := startOnePort(t, fs, html)
	tlsDial := func() net.Conn {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	plain := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for name, dial := range map[string]func() *testClient{
		"tcp":         func() *testClient { return dialProxy(t, addr) },
		"ws-unmasked": func() *testClient { return dialWS(t, plain(), false) },
		"ws-masked":   func() *testClient { return dialWS(t, plain(), true) },
		"ssl": func() *testClient {
			c := tlsDial()
			t.Cleanup(func() { c.Close() })
			tc := newTestClient(c, nil)
			tc.Writer = frame.Writer{Encoding: frame.Rencode}
			return tc
		},
		"wss": func() *testClient { return dialWS(t, tlsDial(), true) },
	} {
		t.Run(name, func(t *testing.T) {
			tc := dial()
			if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
				t.Fatalf("login: %s", p)
			}
			tc.send(frame.Packet{"ping", 7, 0, "x"})
			if p := tc.recv(t); p.Type() != "ping_echo" {
				t.Fatalf("ping: %s", p)
			}
			const n, size = 10, 200_000 // frames bigger than one read
			tc.send(frame.Packet{"stream", n, size})
			for i := range n {
				p := tc.recv(t)
				if px, _ := p[7].([]byte); p.Type() != "draw" || len(px) != size || px[size-1] != byte(i) {
					t.Fatalf("draw %d: %s", i, p)
				}
			}
		})
	}
	t.Run("html", func(t *testing.T) {
		for _, c := range []net.Conn{plain(), tlsDial()} {
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /missing.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			br := bufio.NewReader(c)
			r1, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(r1.Body)
			r2, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r1.StatusCode != 200 || string(body) != "<html>xpra html5</html>" || !strings.HasPrefix(r1.Header.Get("Content-Type"), "text/html") || r2.StatusCode != 404 {
				t.Errorf("html: %d %q %s / %d", r1.StatusCode, body, r1.Header.Get("Content-Type"), r2.StatusCode)
			}
			c.Close()
		}
	})
	t.Run("ws control frames", func(t *testing.T) {
		c := plain()
		tc := dialWS(t, c, true)
		ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewPingFrame([]byte("hi"))))
		h, err := ws.ReadHeader(c)
		if err != nil || h.OpCode != ws.OpPong || h.Length != 2 {
			t.Fatalf("pong: %+v %v", h, err)
		}
		io.ReadFull(c, make([]byte, 2))
		ws.WriteFrame(c, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
		h, err = ws.ReadHeader(c)
		if err != nil || h.OpCode != ws.OpClose {
			t.Fatalf("close answer: %+v %v", h, err)
		}
		_ = tc
	})
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// Bad input on the shared port ends that connection only, with a reason
// where the protocol has a way to give one.
func TestOnePortBadInput(t *testing.T) {
	fs := startFakeServer(t, "")
	addr := startOnePort(t, fs, "")
	// A session that must survive all of it.
	keep := dialProxy(t, addr)
	if p := keep.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatalf("login: %s", p)
	}
	readAll := func(c net.Conn, d time.Duration) string {
		c.SetReadDeadline(time.Now().Add(d))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	t.Run("half-finished TLS handshake", func(t *testing.T) {
		c, _ := net.Dial("tcp", addr)
		defer c.Close()
		c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}) // a ClientHello that never ends
		start := time.Now()
		readAll(c, 10*time.Second)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("closed after %v, want the 2 s login timeout", d)
		}
	})
	t.Run("HTTP request that never ends", func(t *testing.T) {
		c, _ := net.Dial("tcp", addr)
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n"))
		if got := readAll(c, 10*time.Second); !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("endless request header", func(t *testing.T) {
		c, _ := net.Dial("tcp", addr)
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 10000)))
		if got := readAll(c, 10*time.Second); !strings.HasPrefix(got, "HTTP/1.1 431") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("websocket frame of 4 GiB", func(t *testing.T) {
		c, _ := net.Dial("tcp", addr)
		tc := dialWS(t, c, true)
		// A hello first, so the proxy answers in xpra packets.
		tc.send(frame.Packet{"hello", hello("foo")})
		if p := tc.recv(t); p.Type() != "challenge" {
			t.Fatalf("%s", p)
		}
		var hdr [14]byte
		hdr[0], hdr[1] = 0x82, 0x80|127
		binary.BigEndian.PutUint64(hdr[2:], 4<<30)
		c.Write(hdr[:])
		p, err := tc.ReadPacket()
		if err != nil || p.Type() != "disconnect" || !strings.Contains(packetText(p), "exceeds") {
			t.Errorf("got %v %v", p, err)
		}
	})
	t.Run("TLS to a port without a certificate", func(t *testing.T) {
		cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}
		plainAddr, _ := startProxy(t, cfg, Options{})
		c, err := tls.Dial("tcp", plainAddr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			t.Fatal("TLS handshake succeeded on a port without a certificate")
		}
		raw, _ := net.Dial("tcp", plainAddr)
		defer raw.Close()
		raw.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5})
		if got := readAll(raw, 5*time.Second); !strings.Contains(got, "SSL packet?") {
			t.Errorf("got %q", got)
		}
	})
	keep.send(frame.Packet{"ping", 1, 0, "x"})
	if p := keep.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("the other session after bad input: %s", p)
	}
}

// ws://, ssl:// and wss:// targets: a proxy in front of a one-port proxy
// (self-signed, verification off by session option) in front of the fake
// server; draws arrive intact through both.
func TestTargetTransports(t *testing.T) {
	fs := startFakeServer(t, "")
	inner := startOnePort(t, fs, "")
	for _, scheme := range []string{"ws", "ssl", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			line := fmt.Sprintf("foo|bar|||%s://foo:bar@%s/||ssl-server-verify-mode=none", scheme, inner)
			addr, _ := startProxy(t, relay.Config{Modules: multifile(t, line)}, Options{})
			tc := dialProxy(t, addr)
			if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
				t.Fatalf("login: %s", packetText(p))
			}
			const n, size = 10, 150_000
			tc.send(frame.Packet{"stream", n, size})
			for i := range n {
				p := tc.recv(t)
				if px, _ := p[7].([]byte); p.Type() != "draw" || len(px) != size || px[0] != byte(i) {
					t.Fatalf("draw %d: %s", i, p)
				}
			}
			tc.send(frame.Packet{"ping", 9, 0, "x"})
			if p := tc.recv(t); p.Type() != "ping_echo" {
				t.Fatalf("ping: %s", p)
			}
		})
	}
	t.Run("verified by default", func(t *testing.T) {
		line := fmt.Sprintf("foo|bar|||ssl://foo:bar@%s/", inner)
		addr, _ := startProxy(t, relay.Config{Modules: multifile(t, line)}, Options{})
		tc := dialProxy(t, addr)
		p := tc.login(t, "foo", "bar")
		expectDisconnect(t, p, "TLS handshake with the server failed")
	})
}

// FuzzWSDecode feeds arbitrary bytes to the WebSocket decoder: it must
// never panic, and what it decodes must never exceed what it was given.
func FuzzWSDecode(f *testing.F) {
	f.Add([]byte{0x82, 0x03, 'a', 'b', 'c'})
	f.Add([]byte{0x82, 0x83, 1, 2, 3, 4, 'a' ^ 1, 'b' ^ 2, 'c' ^ 3})
	f.Add([]byte{0x02, 0x01, 'x', 0x80, 0x01, 'y'})
	f.Add([]byte{0x89, 0x02, 'h', 'i', 0x88, 0x00})
	f.Add([]byte{0x82, 0x7f, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Add([]byte{0x82, 0x7e, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		fc := &fakeGnet{in: data}
		w := newWSConn(fc, 1<<16)
		err := w.decode()
		if w.InboundBuffered() > len(data) {
			t.Fatalf("decoded %d bytes from %d", w.InboundBuffered(), len(data))
		}
		if err == nil && w.remaining == 0 && len(data)-fc.off > ws.MaxHeaderSize+125 {
			t.Fatalf("stopped with %d bytes left and no error", len(data)-fc.off)
		}
	})
}

// fakeGnet is the part of gnet.Conn the decoder uses.
type fakeGnet struct {
	gnet.Conn
	in  []byte
	off int
	out [][]byte
}

func (f *fakeGnet) InboundBuffered() int { return len(f.in) - f.off }
func (f *fakeGnet) Peek(n int) ([]byte, error) {
	if n > len(f.in)-f.off {
		return nil, io.ErrShortBuffer
	}
	return f.in[f.off : f.off+n], nil
}
func (f *fakeGnet) Discard(n int) (int, error) { f.off += n; return n, nil }
func (f *fakeGnet) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		f.out = append(f.out, append([]byte(nil), b...))
		n += len(b)
	}
	return n, nil
}
