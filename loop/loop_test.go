package loop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// These tests run the reactor against simulated xpra peers written with
// frame/: a server that answers hellos, pings, info requests and streams
// draw packets with raw chunks, and clients that log in with the real
// hmac challenge. The interop tests in cmd/xpraproxy do the same with the
// real xpra 3.1.3.

type fakeServer struct {
	ln       net.Listener
	password string
	mu       sync.Mutex
	hellos   []frame.Dict
	frames   []frame.Header // headers of frames received after the hello
	closed   chan struct{}
	conns    []net.Conn
}

// kill stops the server as a crash would: listener and connections gone.
func (s *fakeServer) kill() {
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
}

func (s *fakeServer) helloCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hellos)
}

func startFakeServer(t *testing.T, password string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln, password: password, closed: make(chan struct{}, 100)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) serve(c net.Conn) {
	defer func() { c.Close(); s.closed <- struct{}{} }()
	r := frame.NewStreamReader(c, 0)
	w := frame.Writer{Encoding: frame.Rencode, Compression: frame.AlgoLZ4 | 1}
	send := func(p frame.Packet) error {
		b, err := w.AppendPacket(nil, p)
		if err == nil {
			_, err = c.Write(b)
		}
		return err
	}
	var ch *authn.Challenge
	for {
		p, err := r.ReadPacket()
		if err != nil {
			return
		}
		if p.Type() == "hello" {
			caps := p[1].(frame.Dict)
			s.mu.Lock()
			s.hellos = append(s.hellos, caps)
			s.mu.Unlock()
			if s.password != "" && ch == nil {
				ch, _ = authn.NewChallenge(caps.Texts("digest"), caps.Texts("salt-digest"), false)
				send(frame.Packet{"challenge", ch.ServerSalt, "", string(ch.Digest), string(ch.SaltDigest), "password"})
				continue
			}
			if ch != nil {
				resp, _ := caps.Text("challenge_response")
				salt, _ := caps.Get("challenge_client_salt")
				cs, _ := frame.AsText(salt)
				if v := ch.Verifier([]byte(resp), []byte(cs)); v == nil || !v([]byte(s.password)) {
					send(frame.Packet{"disconnect", "authentication failed"})
					return
				}
			}
			send(frame.Packet{"hello", frame.NewDict("version", "3.1.3", "ping-echo-sourceid", true, "aliases", frame.NewDict("draw", 35),
				"padding", strings.Repeat("x", 2000))})
			break
		}
	}
	for {
		n, h, err := frameAfterHello(r, c)
		_ = n
		if err != nil {
			return
		}
		s.mu.Lock()
		s.frames = append(s.frames, h.h)
		s.mu.Unlock()
		p := h.p
		if p == nil {
			continue
		}
		switch p.Type() {
		case "ping":
			echo := frame.Packet{"ping_echo", p[1], 0, 0, 0, 0}
			if len(p) >= 4 {
				echo = append(echo, p[3]) // ping-echo-sourceid
			}
			send(echo)
		case "info-request":
			send(frame.Packet{"info-response", frame.NewDict("server", frame.NewDict("type", "fake"))})
		case "stream":
			count, _ := frame.AsInt(p[1])
			size, _ := frame.AsInt(p[2])
			for i := range count {
				data := bytes.Repeat([]byte{byte(i)}, int(size))
				if err := send(frame.Packet{"draw", 1, 0, 0, 10, 10, "rgb24", frame.Compressed{Data: data}, i, 40, frame.NewDict("lz4", 1)}); err != nil {
					return
				}
			}
		case "big":
			send(frame.Packet{"big", strings.Repeat("abcdefgh", 1000)})
		case "bye":
			send(frame.Packet{"disconnect", "server shutdown", "going away"})
			return
		}
	}
}

type recvd struct {
	h frame.Header
	p frame.Packet
}

// frameAfterHello reads one frame at a time so the test can see headers.
func frameAfterHello(r *frame.StreamReader, c net.Conn) (int, recvd, error) {
	var hdr [frame.HeaderSize]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return 0, recvd{}, err
	}
	size, h, err := frame.FrameLen(hdr[:], 0)
	if err != nil {
		return 0, recvd{}, err
	}
	buf := make([]byte, size)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(c, buf[frame.HeaderSize:]); err != nil {
		return 0, recvd{}, err
	}
	p, _, err := r.Reader.Next(buf)
	return size, recvd{h, p}, err
}

// startProxy runs the reactor on a free port with one tcp listener.
func startProxy(t *testing.T, cfg relay.Config, opts Options) (string, *Server) {
	t.Helper()
	port := xpratest.FreePort()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.LoginTimeout == 0 {
		cfg.LoginTimeout = 10 * time.Second
	}
	if cfg.ChallengeTimeout == 0 {
		cfg.ChallengeTimeout = 10 * time.Second
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = 16 << 20
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv := New([]Listener{{Network: "tcp", Address: addr, Config: &cfg}}, opts)
	errc := make(chan error, 1)
	go func() { errc <- srv.Run() }()
	select {
	case <-srv.Ready():
	case err := <-errc:
		t.Fatalf("proxy: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("proxy did not start")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
		<-errc
	})
	return addr, srv
}

func multifile(t *testing.T, lines ...string) []authn.Module {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	m, err := authn.New(authn.Spec{Name: "multifile", Options: map[string]string{"filename": path}}, authn.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return []authn.Module{m}
}

// testClient is a simulated xpra 3.1 client.
type testClient struct {
	c   net.Conn
	r   *frame.StreamReader
	w   frame.Writer
	raw io.Writer // the stream's writer when not c (WebSocket framing)
}

func dialProxy(t *testing.T, addr string) *testClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &testClient{c: c, r: frame.NewStreamReader(c, 0), w: frame.Writer{Encoding: frame.Rencode, Compression: frame.AlgoLZ4 | 1}}
}

func (tc *testClient) send(p frame.Packet) error {
	b, err := tc.w.AppendPacket(nil, p)
	if err == nil {
		if tc.raw != nil {
			_, err = tc.raw.Write(b)
		} else {
			_, err = tc.c.Write(b)
		}
	}
	return err
}

func (tc *testClient) recv(t *testing.T) frame.Packet {
	t.Helper()
	tc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := tc.r.ReadPacket()
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	return p
}

func hello(user string, extra ...any) frame.Dict {
	d := frame.NewDict("version", "3.1.3", "username", user, "rencode", true,
		"digest", []any{"hmac", "hmac+sha256", "hmac+sha512"}, "salt-digest", []any{"hmac+sha256", "hmac+sha512"},
		"compression_level", 1, "lz4", true, "aliases", frame.NewDict("hello", 1, "draw", 35))
	for i := 0; i+1 < len(extra); i += 2 {
		d.Set(extra[i].(string), extra[i+1])
	}
	return d
}

// login does the hello / challenge / hello exchange and returns the
// proxy's first packet after it.
func (tc *testClient) login(t *testing.T, user, password string, extra ...any) frame.Packet {
	t.Helper()
	h := hello(user, extra...)
	if err := tc.send(frame.Packet{"hello", h}); err != nil {
		t.Fatal(err)
	}
	p := tc.recv(t)
	if p.Type() != "challenge" {
		return p
	}
	salt := p[1].([]byte)
	d, _ := frame.AsText(p[3])
	sd, _ := frame.AsText(p[4])
	resp, cs, err := authn.Response([]byte(password), salt, authn.Digest(d), authn.Digest(sd))
	if err != nil {
		t.Fatal(err)
	}
	h.Set("challenge_response", string(resp))
	h.Set("challenge_client_salt", cs)
	tc.send(frame.Packet{"hello", h})
	return tc.recv(t)
}

func TestRelayEndToEnd(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.addr()+"/")}, Options{})
	tc := dialProxy(t, addr)
	p := tc.login(t, "foo", "bar")
	if p.Type() != "hello" {
		t.Fatalf("after login: %s %v", p, p)
	}
	caps := p[1].(frame.Dict)
	if caps.Has("aliases") || !caps.Has("proxy.version") {
		t.Errorf("server hello not filtered: aliases=%v proxy.version=%v", caps.Has("aliases"), caps.Has("proxy.version"))
	}
	fs.mu.Lock()
	sh := fs.hellos[0]
	fs.mu.Unlock()
	if sh.Has("aliases") || sh.Has("challenge_response") || !sh.Has("proxy") {
		t.Errorf("client hello not filtered for the server: %v", sh)
	}
	// Pass-through both ways.
	tc.send(frame.Packet{"ping", 12345, 0, "x"})
	if p := tc.recv(t); p.Type() != "ping_echo" {
		t.Fatalf("ping: got %s", p)
	}
	// Draw packets with raw chunks arrive intact and in order.
	const n, size = 50, 100_000
	tc.send(frame.Packet{"stream", n, size})
	for i := range n {
		p := tc.recv(t)
		if p.Type() != "draw" {
			t.Fatalf("packet %d: %s", i, p)
		}
		px := p[7].([]byte)
		if len(px) != size || px[0] != byte(i) || px[size-1] != byte(i) {
			t.Fatalf("draw %d: %d bytes, first %d", i, len(px), px[0])
		}
	}
	// info-response gets the proxy's info.
	tc.send(frame.Packet{"info-request", []any{}, []any{}})
	p = tc.recv(t)
	info, _ := p[1].(frame.Dict)
	if p.Type() != "info-response" || !info.Has("proxy") || !info.Has("server") {
		t.Fatalf("info-response: %v", p)
	}
	// A large main packet (cut through) passes too.
	tc.send(frame.Packet{"big"})
	if p := tc.recv(t); p.Type() != "big" {
		t.Fatalf("big: %s", p)
	}
	// The server's disconnect reaches the client, then the socket closes.
	tc.send(frame.Packet{"bye"})
	p = tc.recv(t)
	expectDisconnect(t, p, "going away")
	tc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.r.ReadPacket(); !errors.Is(err, io.EOF) {
		t.Fatalf("after disconnect: %v", err)
	}
}

func packetText(p frame.Packet) string {
	var parts []string
	for _, v := range p {
		s, ok := frame.AsText(v)
		if !ok {
			s = fmt.Sprint(v)
		}
		if len(s) > 200 {
			s = fmt.Sprintf("<%d bytes>", len(s))
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " | ")
}

func expectDisconnect(t *testing.T, p frame.Packet, want string) {
	t.Helper()
	if p.Type() != "disconnect" || !strings.Contains(packetText(p), want) {
		t.Fatalf("got %q, want a disconnect with %q", packetText(p), want)
	}
}

func TestFailures(t *testing.T) {
	fs := startFakeServer(t, "serverpw")
	dead := xpratest.FreePort()
	mods := multifile(t,
		"foo|bar|||tcp://"+fs.addr()+"/",
		"withpw|x|||tcp://u:serverpw@"+fs.addr()+"/",
		"nopw|x|||tcp://"+fs.addr()+"/",
		"badpw|x|||tcp://u:wrong@"+fs.addr()+"/",
		"gone|x|||tcp://127.0.0.1:"+fmt.Sprint(dead)+"/",
		"two|x|||tcp://"+fs.addr()+"/,tcp://127.0.0.1:1/",
	)
	addr, _ := startProxy(t, relay.Config{Modules: mods, Limits: relay.Limits{LoginTimeout: 500 * time.Millisecond, ChallengeTimeout: time.Second}}, Options{})
	t.Run("wrong password", func(t *testing.T) {
		expectDisconnect(t, dialProxy(t, addr).login(t, "foo", "nope"), "authentication failed")
	})
	t.Run("unknown user", func(t *testing.T) {
		expectDisconnect(t, dialProxy(t, addr).login(t, "who", "x"), "authentication failed")
	})
	t.Run("target password answers the server's challenge", func(t *testing.T) {
		if p := dialProxy(t, addr).login(t, "withpw", "x"); p.Type() != "hello" {
			t.Fatalf("got %v", p)
		}
	})
	t.Run("server wants a password the target lacks", func(t *testing.T) {
		expectDisconnect(t, dialProxy(t, addr).login(t, "nopw", "x"), "requires a password")
	})
	t.Run("server refuses the target's password", func(t *testing.T) {
		expectDisconnect(t, dialProxy(t, addr).login(t, "badpw", "x"), "authentication failed")
	})
	t.Run("dead target", func(t *testing.T) {
		expectDisconnect(t, dialProxy(t, addr).login(t, "gone", "x"), "failed to connect to display")
	})
	t.Run("several targets, none named", func(t *testing.T) {
		expectDisconnect(t, dialProxy(t, addr).login(t, "two", "x"), "please specify a display")
	})
	t.Run("no version", func(t *testing.T) {
		tc := dialProxy(t, addr)
		tc.send(frame.Packet{"hello", frame.NewDict("username", "foo")})
		expectDisconnect(t, tc.recv(t), "version error")
	})
	t.Run("garbage", func(t *testing.T) {
		tc := dialProxy(t, addr)
		tc.c.Write([]byte("hello there\n"))
		tc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(tc.c)
		if string(b) != "disconnect: invalid packet format, character 0x68, not an xpra client?\n" {
			t.Fatalf("got %q", b)
		}
	})
	t.Run("oversized header", func(t *testing.T) {
		tc := dialProxy(t, addr)
		tc.c.Write(frame.Header{Flags: frame.FlagRencode, Size: 0xFFFFFFF0}.Append(nil))
		tc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(tc.c)
		if !strings.Contains(string(b), "maximum allowed") {
			t.Fatalf("got %q", b)
		}
	})
	t.Run("silent client", func(t *testing.T) {
		tc := dialProxy(t, addr)
		tc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(tc.c)
		if string(b) != "disconnect: login timeout\n" {
			t.Fatalf("got %q", b)
		}
	})
	t.Run("version request without login", func(t *testing.T) {
		tc := dialProxy(t, addr)
		tc.send(frame.Packet{"hello", frame.NewDict("version", "3.1.3", "version_request", true)})
		p := tc.recv(t)
		v, _ := p[1].(frame.Dict).Text("version")
		if p.Type() != "hello" || v == "" {
			t.Fatalf("got %v", p)
		}
	})
}

func TestNoAuthModuleRefusesEveryone(t *testing.T) {
	fs := startFakeServer(t, "")
	_ = fs
	addr, _ := startProxy(t, relay.Config{}, Options{})
	expectDisconnect(t, dialProxy(t, addr).login(t, "foo", "bar"), "no sessions found")
}

// compression=0: the proxy↔server link carries no compression, the
// client link keeps lz4.
func TestUncompressedServerLink(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.addr()+"/||compression=0")}, Options{})
	tc := dialProxy(t, addr)
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	fs.mu.Lock()
	level, _ := fs.hellos[0].Int("compression_level")
	fs.mu.Unlock()
	if level != 0 {
		t.Errorf("server was asked for compression level %d", level)
	}
	// The client compresses (lz4) a large packet; the server must get it
	// uncompressed.
	tc.send(frame.Packet{"ping", 1, 2, strings.Repeat("compressible ", 200)})
	tc.recv(t) // ping_echo
	fs.mu.Lock()
	got := fs.frames[len(fs.frames)-1]
	fs.mu.Unlock()
	if got.Compression.Compressed() {
		t.Errorf("server received a %s frame on an uncompressed link", got.Compression)
	}
}
