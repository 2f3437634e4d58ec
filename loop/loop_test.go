package loop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/testenv"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// These tests run the reactor against the simulated xpra peers of
// internal/xpratest: a server that answers hellos, pings, info requests
// and streams draw packets with raw chunks, and clients that log in with
// the real hmac challenge. The interop tests in cmd/xpraproxy do the same
// with the real xpra of both generations.

// startFakeServer is an xpratest server (with its own password, if any)
// for the length of the test.
func startFakeServer(t *testing.T, password string) *xpratest.Server {
	return xpratest.NewServer(t, xpratest.ServerOptions{Password: password})
}

// startProxy runs the reactor on a free port with one tcp listener.
func startProxy(t *testing.T, cfg relay.Config, opts Options) (string, *Server) {
	t.Helper()
	port := testenv.FreePort()
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

// testClient is an xpratest client with the test's failure handling.
type testClient struct{ *xpratest.Client }

func dialProxy(t *testing.T, addr string) *testClient {
	t.Helper()
	c, err := xpratest.Dial(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &testClient{c}
}

// newTestClient is a client over c whose xpra stream is stream (a
// WebSocket or TLS layer; nil for c itself).
func newTestClient(c net.Conn, stream io.ReadWriter) *testClient {
	return &testClient{xpratest.NewClient(c, stream)}
}

func (tc *testClient) send(p frame.Packet) error { return tc.Send(p) }

func (tc *testClient) recv(t *testing.T) frame.Packet {
	t.Helper()
	p, err := tc.Recv(10 * time.Second)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	return p
}

// hello is xpratest's 3.1 hello with aliases (which the proxy must not
// pass on) and the extra key/value pairs.
func hello(user string, extra ...any) frame.Dict {
	d := xpratest.Hello(user)
	d.Set("aliases", frame.NewDict("hello", 1, "draw", 35))
	for i := 0; i+1 < len(extra); i += 2 {
		d.Set(extra[i].(string), extra[i+1])
	}
	return d
}

// login does the hello / challenge / hello exchange and returns the
// proxy's first packet after it.
func (tc *testClient) login(t *testing.T, user, password string, extra ...any) frame.Packet {
	t.Helper()
	p, err := tc.Login(user, password, hello(user, extra...))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	return p
}

func TestRelayEndToEnd(t *testing.T) {
	fs := startFakeServer(t, "")
	addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/")}, Options{})
	tc := dialProxy(t, addr)
	p := tc.login(t, "foo", "bar")
	if p.Type() != "hello" {
		t.Fatalf("after login: %s %v", p, p)
	}
	caps := p[1].(frame.Dict)
	if caps.Has("aliases") || !caps.Has("proxy.version") {
		t.Errorf("server hello not filtered: aliases=%v proxy.version=%v", caps.Has("aliases"), caps.Has("proxy.version"))
	}
	sh := fs.Hellos()[0]
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
	tc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.ReadPacket(); !errors.Is(err, io.EOF) {
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
	dead := testenv.FreePort()
	mods := multifile(t,
		"foo|bar|||tcp://"+fs.Addr()+"/",
		"withpw|x|||tcp://u:serverpw@"+fs.Addr()+"/",
		"nopw|x|||tcp://"+fs.Addr()+"/",
		"badpw|x|||tcp://u:wrong@"+fs.Addr()+"/",
		"gone|x|||tcp://127.0.0.1:"+fmt.Sprint(dead)+"/",
		"two|x|||tcp://"+fs.Addr()+"/,tcp://127.0.0.1:1/",
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
		tc.Conn.Write([]byte("hello there\n"))
		tc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(tc.Conn)
		if string(b) != "disconnect: invalid packet format, character 0x68, not an xpra client?\n" {
			t.Fatalf("got %q", b)
		}
	})
	t.Run("oversized header", func(t *testing.T) {
		tc := dialProxy(t, addr)
		tc.Conn.Write(frame.Header{Flags: frame.FlagRencode, Size: 0xFFFFFFF0}.Append(nil))
		tc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(tc.Conn)
		if !strings.Contains(string(b), "maximum allowed") {
			t.Fatalf("got %q", b)
		}
	})
	t.Run("silent client", func(t *testing.T) {
		tc := dialProxy(t, addr)
		tc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(tc.Conn)
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
	addr, _ := startProxy(t, relay.Config{Modules: multifile(t, "foo|bar|||tcp://"+fs.Addr()+"/||compression=0")}, Options{})
	tc := dialProxy(t, addr)
	if p := tc.login(t, "foo", "bar"); p.Type() != "hello" {
		t.Fatal(p)
	}
	level, _ := fs.Hellos()[0].Int("compression_level")
	if level != 0 {
		t.Errorf("server was asked for compression level %d", level)
	}
	// The client compresses (lz4) a large packet; the server must get it
	// uncompressed.
	tc.send(frame.Packet{"ping", 1, 2, strings.Repeat("compressible ", 200)})
	tc.recv(t) // ping_echo
	frames := fs.Frames()
	got := frames[len(frames)-1]
	if got.Compression.Compressed() {
		t.Errorf("server received a %s frame on an uncompressed link", got.Compression)
	}
}
