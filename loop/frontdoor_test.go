package loop

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/relay"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		in   string
		m    mode
		tls  bool
		want verdict
		ssh  bool
	}{
		{"", modeAny, false, needMore, false},
		{"P\x01\x00\x00", modeAny, false, toXpra, false},
		{"\x16\x03\x01", modeAny, true, toTLS, false},
		{"\x16\x03\x01", modeAny, false, toXpra, false},
		{"\x16\x03\x01", modeInnerAny, true, toXpra, false},
		{"GE", modeAny, false, needMore, false},
		{"GET / HT", modeAny, false, toHTTP, false},
		{"P\x01", modeHTTP, false, refuseNotHTTP, false},
		{"GET / HT", modeTLSAny, true, refusePlain, false},
		{"P\x01", modeInnerHTTP, false, refuseNotHTTP, false},
		{"SSH-2.0-", modeAny, false, toSSH, true},
		{"SS", modeAny, false, needMore, true},
		{"SSH-2.0-", modeAny, false, toXpra, false},     // no SSH: the xpra parser says "SSH packet"
		{"SSH-2.0-", modeInnerAny, false, toXpra, true}, // never SSH inside TLS
		{"SSH-2.0-", modeHTTP, true, refuseNotHTTP, true},
	} {
		if got := classify([]byte(tc.in), tc.m, tc.tls, tc.ssh); got != tc.want {
			t.Errorf("classify(%q, %d, %v) = %d, want %d", tc.in, tc.m, tc.tls, got, tc.want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"P\x01\x00\x00\x00\x00\x00\x10", "GET / HTTP/1.1", "\x16\x03\x01\x02", "GE", "HEAD ", "SSH-2.0"} {
		f.Add([]byte(s), uint8(0), true, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, m uint8, haveTLS, haveSSH bool) {
		md := mode(m % 6)
		v := classify(b[:min(len(b), 8)], md, haveTLS, haveSSH)
		switch v {
		case toSSH:
			if !haveSSH || md != modeAny || !bytes.HasPrefix(b, []byte("SSH-")) {
				t.Fatalf("SSH for %q in mode %d", b, md)
			}
		case toTLS:
			if !haveTLS || md.inner() || b[0] != 0x16 {
				t.Fatalf("TLS for %q in mode %d", b, md)
			}
		case toXpra:
			if md.tlsOnly() || (!md.xpra() && b[0] != 0x16) {
				t.Fatalf("xpra for %q in mode %d", b, md)
			}
		case toHTTP:
			if md.tlsOnly() || !looksHTTP(b) {
				t.Fatalf("HTTP for %q in mode %d", b, md)
			}
		case needMore:
			if len(b) >= 8 {
				t.Fatalf("eight bytes %q not enough in mode %d", b, md)
			}
		}
	})
}

func TestReadRequest(t *testing.T) {
	get := "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
	if req, used, refusal := readRequest([]byte(get+"GET /"), len(get)+5); req == nil || used != len(get) || refusal != nil {
		t.Errorf("GET: %v %d %q", req, used, refusal)
	}
	if req, _, refusal := readRequest([]byte("GET / HTTP/1.1\r\nHost"), 20); req != nil || refusal != nil {
		t.Error("an incomplete head was decided")
	}
	long := bytes.Repeat([]byte("X-A: b\r\n"), maxRequestHeader/8+1)
	if _, _, refusal := readRequest(append([]byte("GET / HTTP/1.1\r\n"), long...), maxRequestHeader+100); !bytes.Contains(refusal, []byte("431")) {
		t.Errorf("endless head: %q", refusal)
	}
	post := "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
	if _, _, refusal := readRequest([]byte(post), len(post)); !bytes.Contains(refusal, []byte("413")) {
		t.Errorf("body: %q", refusal)
	}
	if _, _, refusal := readRequest([]byte("GET\r\n\r\n"), 7); !bytes.Contains(refusal, []byte("400")) {
		t.Errorf("malformed: %q", refusal)
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		peek := b[:min(len(b), maxRequestHeader+4)]
		req, used, refusal := readRequest(peek, len(b))
		if used < 0 || used > len(peek) {
			t.Fatalf("used %d of %d", used, len(peek))
		}
		if req != nil && refusal != nil {
			t.Fatal("a request and a refusal")
		}
		if req != nil && (req.ContentLength != 0 || req.TransferEncoding != nil) {
			t.Fatal("a request with a body accepted")
		}
		if req == nil && refusal == nil && len(b) > maxRequestHeader {
			t.Fatalf("waiting for more with %d bytes buffered", len(b))
		}
		if refusal != nil {
			if _, err := http.ReadResponse(bufioReader(refusal), nil); err != nil {
				t.Fatalf("refusal is not HTTP: %v", err)
			}
		}
	})
}

// With WSRequireMask, a client's unmasked frame ends the connection;
// masked frames pass.
func TestWebSocketRequireMask(t *testing.T) {
	for _, masked := range []bool{true, false} {
		fc := &fakeGnet{}
		hdr := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 3, Masked: masked, Mask: [4]byte{1, 2, 3, 4}}
		var buf bytes.Buffer
		ws.WriteHeader(&buf, hdr)
		payload := []byte("abc")
		if masked {
			ws.Cipher(payload, hdr.Mask, 0)
		}
		fc.in = append(buf.Bytes(), payload...)
		w := newWSConn(fc, 1<<16)
		w.requireMask = true
		err := w.decode()
		if masked && (err != nil || w.InboundBuffered() != 3) {
			t.Errorf("masked frame: %v", err)
		}
		if !masked && (err == nil || !strings.Contains(err.Error(), "unmasked")) {
			t.Errorf("unmasked frame accepted: %v", err)
		}
	}
}

// Over the global budget, a stranger's half-sent hello is shed before any
// user's relaying session.
func TestBudgetShedsStrangersFirst(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, srv := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"), Limits: relay.Limits{MaxSessionBuffer: 1 << 30}},
		Options{MaxBufferTotal: 64 << 10})
	user := dialProxy(t, addr)
	if p := user.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	stranger, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	// A hello frame of 200 KiB announced, 150 KiB sent.
	h := frame.Header{Flags: frame.FlagRencode, Size: 200 << 10}.Append(nil)
	stranger.Write(append(h, make([]byte, 150<<10)...))
	stranger.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	n, _ := stranger.Read(buf)
	if !strings.Contains(string(buf[:n]), "proxy buffer budget exceeded") {
		t.Errorf("stranger: %q (buffered %d)", buf[:n], srv.Buffered())
	}
	user.send(frame.Packet{"ping", 1, 2, "x"})
	if p := user.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("the user's session: %v", p)
	}
}

// The connection caps refuse before reading, with xpra's plain-text line;
// the pre-login cap evicts instead (admit.go).
func TestConnectionCaps(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")},
		Options{MaxConnections: 6, MaxLoginConnections: 4, MaxLoginsPerSource: 3})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	refusal := func(src string) string {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		b := make([]byte, 200)
		n, _ := c.Read(b)
		return string(b[:n])
	}
	for i := 0; i < 3; i++ {
		if r := refusal("127.0.0.2"); r != "" {
			t.Fatalf("connection %d refused: %q", i, r)
		}
	}
	if r := refusal("127.0.0.2"); !strings.Contains(r, "from your address") {
		t.Errorf("4th from one address: %q", r)
	}
	if r := refusal("127.0.0.3"); r != "" {
		t.Fatalf("another address: %q", r)
	}
	// The pre-login cap is full: a newcomer takes the place of the
	// longest waiting silent connection of the largest block (its own).
	if r := refusal("127.0.0.4"); r != "" {
		t.Errorf("5th logging in: %q", r)
	}
	held[0].SetReadDeadline(time.Now().Add(2 * time.Second))
	if b, _ := io.ReadAll(held[0]); !strings.HasPrefix(string(b), evictedLine) {
		t.Errorf("the oldest silent connection: %q", b)
	}
	// A logged-in user leaves the pre-login count.
	for _, c := range held {
		c.Close()
	}
	held = nil
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 2; i++ {
		tc := dialProxy(t, addr)
		if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
			t.Fatal(p)
		}
	}
	for i := 0; i < 4; i++ {
		if r := refusal("127.0.0." + string(rune('5'+i))); r != "" {
			t.Fatalf("logging in %d with 2 relaying: %q", i, r)
		}
	}
	if r := refusal("127.0.0.9"); !strings.Contains(r, "too many connections") {
		t.Errorf("7th connection: %q", r)
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// If the event loops end without Stop (gnet gave up), Run reports an
// error, so that the process exits non-zero and a supervisor restarts it.
func TestEngineEndIsAnError(t *testing.T) {
	cfg := relay.Config{Modules: multifile(t, "foo|bar|||tcp://127.0.0.1:1/"), Limits: relay.Limits{LoginTimeout: time.Second}}
	srv := New([]Listener{{Network: "tcp", Address: "127.0.0.1:0", Config: &cfg}}, Options{})
	errc := make(chan error, 1)
	go func() { errc <- srv.Run() }()
	select {
	case <-srv.Ready():
	case err := <-errc:
		t.Fatal(err)
	}
	srv.eng.Stop(context.Background()) // not through srv.Stop
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "ended unexpectedly") {
			t.Errorf("Run after the engine ended: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	srv2 := New([]Listener{{Network: "tcp", Address: "127.0.0.1:0", Config: &cfg}}, Options{})
	go func() { errc <- srv2.Run() }()
	<-srv2.Ready()
	srv2.Stop(context.Background())
	if err := <-errc; err != nil {
		t.Errorf("Run after Stop: %v", err)
	}
}

// A browser's upgrade (with Origin) must mask its frames; xpra's python
// clients (no Origin) may not.
func TestWebSocketBrowserMustMask(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}, Options{})
	for _, tc := range []struct {
		origin, masked, ok bool
	}{{true, true, true}, {true, false, false}, {false, false, true}} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		d := ws.Dialer{Protocols: []string{"binary"}, NetDial: func(context.Context, string, string) (net.Conn, error) { return c, nil }}
		if tc.origin {
			d.Header = ws.HandshakeHeaderHTTP(http.Header{"Origin": []string{"http://127.0.0.1"}})
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := d.Upgrade(c, mustURL("ws://127.0.0.1/")); err != nil {
			t.Fatalf("upgrade: %v", err)
		}
		s := &wsStream{c: c, masked: tc.masked, r: &wsutil.Reader{Source: c, State: ws.StateClientSide}}
		tc2 := newTestClient(c, s)
		tc2.send(frame.Packet{"hello", hello("foo")})
		if tc.ok {
			if p, err := tc2.ReadPacket(); err != nil || p.Type() != "challenge" {
				t.Errorf("origin=%v masked=%v: %v %v", tc.origin, tc.masked, p, err)
			}
		} else {
			// Before a hello, xpra's plain-text line (in a frame).
			b, _ := io.ReadAll(s)
			if !strings.Contains(string(b), "disconnect: protocol error") || !strings.Contains(string(b), "unmasked") {
				t.Errorf("origin=%v masked=%v: %q", tc.origin, tc.masked, b)
			}
		}
		c.Close()
	}
}

// A burst of logins to one server beyond its dial limit queues instead of
// failing; the limit only bounds the dials in progress.
func TestConnectLimitQueuesBursts(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/"),
		Connects: &relay.ConnectLimiter{PerTarget: 2}}, Options{MaxLoginsPerSource: 0})
	errs := make(chan string, 60)
	for i := 0; i < 60; i++ {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer c.Close()
			tc := newTestClient(c, nil)
			if err := tc.send(frame.Packet{"hello", hello("foo")}); err != nil {
				errs <- err.Error()
				return
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			p, err := tc.ReadPacket()
			if err != nil || p.Type() != "challenge" {
				errs <- fmt.Sprint("challenge: ", err, p)
				return
			}
			salt := p[1].([]byte)
			d, _ := frame.AsText(p[3])
			sd, _ := frame.AsText(p[4])
			resp, cs, _ := authn.Response([]byte("bar"), salt, authn.Digest(d), authn.Digest(sd))
			h := hello("foo", "challenge_response", string(resp), "challenge_client_salt", cs)
			tc.send(frame.Packet{"hello", h})
			if p, err := tc.ReadPacket(); err != nil || p.Type() != "hello" {
				errs <- fmt.Sprint("after login: ", err, packetText(p))
				return
			}
			errs <- ""
		}()
	}
	for i := 0; i < 60; i++ {
		if e := <-errs; e != "" {
			t.Errorf("login %d: %s", i, e)
		}
	}
}
