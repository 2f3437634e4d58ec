package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/authn"
	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// The session's phases driven without a reactor (xpratest.Conn and
// Host): hello → challenge → authentication → connect → relay → closing,
// and each way out of them.

// users is a multifile module: foo/bar reaches target, gone/pw a port
// nobody listens on.
func users(t *testing.T, target string) []authn.Module {
	t.Helper()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	path := filepath.Join(t.TempDir(), "users")
	os.WriteFile(path, []byte("foo|bar|||"+target+"\ngone|pw|||tcp://"+deadAddr+"/\n"), 0o600)
	m, err := authn.New(authn.Spec{Name: "multifile", Options: map[string]string{"filename": path}}, authn.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return []authn.Module{m}
}

// server is a minimal xpra server for the test's lifetime.
func server(t *testing.T) *xpratest.Server {
	t.Helper()
	srv, err := xpratest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func config(mods []authn.Module) *relay.Config {
	return &relay.Config{
		Limits: relay.Limits{LoginTimeout: 5 * time.Second, ChallengeTimeout: 5 * time.Second,
			ConnectTimeout: 5 * time.Second, MaxPacketSize: 16 << 20},
		Modules:     mods,
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Generations: &relay.Generations{},
		Connects:    &relay.ConnectLimiter{PerTarget: 4},
	}
}

// peer is one session under test and its client's side.
type peer struct {
	t    *testing.T
	s    *relay.Session
	c    *xpratest.Conn
	h    *xpratest.Host
	w    frame.Writer
	now  time.Time
	seen []frame.Packet
}

var sessionIDs atomic.Uint64

func newPeer(t *testing.T, cfg *relay.Config) *peer {
	p := &peer{t: t, c: xpratest.NewConn(""), h: &xpratest.Host{}, w: frame.Writer{Encoding: frame.Rencode}, now: time.Now()}
	p.s = relay.NewSession(sessionIDs.Add(1), cfg, p.h, p.c, p.now)
	return p
}

// send feeds a packet from the client and lets the loop and the off-loop
// work run; it returns what the client was sent meanwhile.
func (p *peer) send(pkt frame.Packet) []frame.Packet {
	p.t.Helper()
	p.c.FeedPacket(p.t, p.w, pkt)
	return p.turn()
}

func (p *peer) turn() []frame.Packet {
	p.t.Helper()
	p.s.ClientTraffic(p.now)
	p.h.Run(p.t, 10*time.Second)
	got := p.c.Packets(p.t)
	p.seen = append(p.seen, got...)
	return got
}

// login sends hello, answers the challenge with password and returns the
// packets after the answer.
func (p *peer) login(hello frame.Dict, password string) []frame.Packet {
	p.t.Helper()
	got := p.send(frame.Packet{"hello", hello})
	if len(got) != 1 || got[0].Type() != "challenge" {
		p.t.Fatalf("no challenge: %v", got)
	}
	answer, err := xpratest.AnswerChallenge(hello, got[0], password)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.send(frame.Packet{"hello", answer})
}

// with is d with k set to v.
func with(d frame.Dict, k string, v any) frame.Dict {
	d.Set(k, v)
	return d
}

// words is the packets as text: rencode's strings arrive as bytes.
func words(pkts []frame.Packet) string {
	var text func(v any) string
	text = func(v any) string {
		switch x := v.(type) {
		case []byte:
			if len(x) > 512 {
				return fmt.Sprintf("<%d bytes>", len(x))
			}
			return string(x)
		case frame.Dict:
			var kv []string
			for _, p := range x {
				kv = append(kv, text(p.Key)+" "+text(p.Value))
			}
			return strings.Join(kv, " ")
		case []any:
			var l []string
			for _, e := range x {
				l = append(l, text(e))
			}
			return strings.Join(l, " ")
		}
		return fmt.Sprint(v)
	}
	var s []string
	for _, p := range pkts {
		var w []string
		for _, v := range p {
			w = append(w, text(v))
		}
		s = append(s, strings.Join(w, " "))
	}
	return strings.Join(s, " | ")
}

func TestSessionRelays(t *testing.T) {
	srv := server(t)
	p := newPeer(t, config(users(t, srv.URL())))
	got := p.login(xpratest.Hello("foo"), "bar")
	if len(got) == 0 || got[0].Type() != "hello" || !p.s.Relaying() || !p.s.LoggedIn() {
		t.Fatalf("after the login: %s (relaying %v)", words(got), p.s.Relaying())
	}
	caps, _ := got[0][1].(frame.Dict)
	if v, _ := caps.Text("proxy.platform"); !strings.Contains(v, "xpraproxy") {
		t.Errorf("the server's hello lacks the proxy's marks: %v", caps)
	}
	if p.h.Admits != 1 || p.h.Outcomes["relayed"] != 1 {
		t.Errorf("admitted %d times, outcomes %v", p.h.Admits, p.h.Outcomes)
	}
	// Client → server and back, through the pipes.
	p.send(frame.Packet{"ping", int64(42), int64(0), "c"})
	out := p.h.Server.Packets(t)
	if len(out) != 1 || out[0].Type() != "ping" {
		t.Fatalf("the server got %s", words(out))
	}
	p.h.Server.FeedPacket(t, p.w, frame.Packet{"ping_echo", int64(42), 0, 0, 0, 0})
	p.s.ServerTraffic(p.now)
	if back := p.c.Packets(t); len(back) != 1 || back[0].Type() != "ping_echo" {
		t.Fatalf("the client got %s", words(back))
	}
	c2s, s2c := p.s.TrafficDelta()
	if c2s.Packets == 0 || s2c.Packets == 0 {
		t.Errorf("traffic not counted: %+v %+v", c2s, s2c)
	}
	// The server goes: the client is told why, then the session ends.
	p.s.OnServerClosed(io.EOF)
	if end := p.c.Packets(t); len(end) != 1 || !strings.Contains(words(end), "server connection lost") {
		t.Fatalf("after the server left: %s", words(end))
	}
	p.s.Sweep(p.now.Add(time.Minute))
	if !p.s.Closed() || !p.c.Closed {
		t.Error("the session did not end")
	}
}

func TestSessionRefusals(t *testing.T) {
	srv := server(t)
	six := frame.NewDict("version", "6.5", "encoders", []any{"rencodeplus"}, "username", "foo",
		"digest", []any{"hmac+sha256"}, "salt-digest", []any{"hmac+sha256"})
	for _, c := range []struct {
		name string
		mods bool
		run  func(p *peer) []frame.Packet
		want string
	}{
		{"garbage", true, func(p *peer) []frame.Packet {
			p.c.Feed([]byte("GET nothing\r\n\r\nxxxxxxxxxxxxxxxx"))
			return p.turn()
		}, "invalid packet format"},
		{"wide hello", true, func(p *peer) []frame.Packet {
			// 250,000 small integers: 4 MB decoded from 250 KB.
			wide := make([]any, 250_000)
			for i := range wide {
				wide[i] = int64(1)
			}
			return p.send(frame.Packet{"hello", wide})
		}, "too many values"},
		{"no version", true, func(p *peer) []frame.Packet {
			return p.send(frame.Packet{"hello", frame.NewDict("username", "foo")})
		}, "version error"},
		{"no modules", false, func(p *peer) []frame.Packet {
			return p.send(frame.Packet{"hello", xpratest.Hello("foo")})
		}, "no sessions found"},
		{"wrong password", true, func(p *peer) []frame.Packet { return p.login(xpratest.Hello("foo"), "nope") }, "authentication failed"},
		{"unknown user", true, func(p *peer) []frame.Packet { return p.login(xpratest.Hello("who"), "x") }, "authentication failed"},
		{"dead target", true, func(p *peer) []frame.Packet { return p.login(xpratest.Hello("gone"), "pw") }, "failed to connect to display"},
		{"version request, 3.1", true, func(p *peer) []frame.Packet {
			return p.send(frame.Packet{"hello", frame.NewDict("version", "3.1.3", "version_request", true)})
		}, "hello version 3.1.3"},
		{"version request, 6.x", true, func(p *peer) []frame.Packet {
			p.w.Encoding = frame.RencodePlus
			return p.send(frame.Packet{"hello", frame.NewDict("version", "6.5", "request", "version")})
		}, "hello version 6.5"},
		{"6.x client login", true, func(p *peer) []frame.Packet {
			p.w.Encoding = frame.RencodePlus
			return p.login(six, "bar")
		}, "hello"},
		{"new session refused", true, func(p *peer) []frame.Packet {
			return p.login(with(xpratest.Hello("foo"), "start-new-session", frame.NewDict("mode", "seamless")), "bar")
		}, "starting new sessions is disabled"},
		{"invalid request", true, func(p *peer) []frame.Packet {
			return p.login(with(xpratest.Hello("foo"), "request", "screenshot"), "bar")
		}, "invalid request: screenshot"},
		{"info request", true, func(p *peer) []frame.Packet {
			return p.login(with(xpratest.Hello("foo"), "request", "info"), "bar")
		}, "mode proxy"},
		{"stop from the network", true, func(p *peer) []frame.Packet {
			return p.login(with(xpratest.Hello("foo"), "request", "stop"), "bar")
		}, "cannot stop proxy server from a remote connection"},
		{"login timeout", true, func(p *peer) []frame.Packet {
			p.send(frame.Packet{"hello", xpratest.Hello("foo")})
			p.s.Sweep(p.now.Add(time.Minute))
			return p.c.Packets(p.t)
		}, "login timeout"},
		{"too busy", true, func(p *peer) []frame.Packet {
			got := p.send(frame.Packet{"hello", xpratest.Hello("foo")})
			answer, _ := xpratest.AnswerChallenge(xpratest.Hello("foo"), got[0], "bar")
			p.h.Refuse = true
			return p.send(frame.Packet{"hello", answer})
		}, "the proxy is too busy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var mods []authn.Module
			if c.mods {
				mods = users(t, srv.URL())
			}
			p := newPeer(t, config(mods))
			got := c.run(p)
			if !strings.Contains(words(got), c.want) {
				t.Errorf("got %s, want %q", words(got), c.want)
			}
			if !strings.HasPrefix(c.want, "hello") || c.name == "version request, 3.1" || c.name == "version request, 6.x" {
				p.s.Sweep(p.now.Add(time.Minute))
				if !p.s.Closed() {
					t.Error("the session did not end")
				}
			}
		})
	}
}

// A server of the other generation refuses with a line of text: the
// client gets the cause, the fix and the server's words; the next client
// gets the reason without a dial.
func TestSessionGenerationMismatch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dials atomic.Int64
	hellos := make(chan frame.ProtoFlags, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			if b, err := bufio.NewReader(c).Peek(8); err == nil {
				hellos <- frame.ProtoFlags(b[1])
			}
			c.Write([]byte("disconnect invalid compression: zlib is not available\n"))
			c.Close()
		}
	}()
	cfg := config(users(t, "tcp://"+ln.Addr().String()+"/"))
	cfg.NoBridge = true
	for i, want := range []string{"(the server said: invalid compression: zlib is not available)", "needs an xpra >= 4.3 client"} {
		p := newPeer(t, cfg)
		got := words(p.login(xpratest.Hello("foo"), "bar"))
		if !strings.Contains(got, "version error") || !strings.Contains(got, want) {
			t.Errorf("attempt %d: %s", i+1, got)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials: the second client should be told without one", n)
	}
	<-hellos
	// With bridging on, the next client's hello goes to the (known 6.x)
	// server in rencodeplus at once.
	cfg.NoBridge = false
	p := newPeer(t, cfg)
	p.login(xpratest.Hello("foo"), "bar")
	if f := <-hellos; f.Encoding() != frame.RencodePlus {
		t.Errorf("bridged hello sent as %s, want rencodeplus", f.Encoding())
	}
	// A bencode-only client (the 3.1 HTML5 client) is bridged too.
	bencodeOnly := xpratest.Hello("foo")
	bencodeOnly.Set("encoders", []any{"bencode"})
	bencodeOnly.Set("rencode", false)
	p = newPeer(t, cfg)
	p.login(bencodeOnly, "bar")
	if f := <-hellos; f.Encoding() != frame.RencodePlus {
		t.Errorf("bencode-only client's bridged hello sent as %s, want rencodeplus", f.Encoding())
	}
}

// Idle and over-budget relaying sessions end with their reasons.
func TestSessionRelayLimits(t *testing.T) {
	srv := server(t)
	cfg := config(users(t, srv.URL()))
	cfg.IdleTimeout = time.Second
	p := newPeer(t, cfg)
	p.login(xpratest.Hello("foo"), "bar")
	if !p.s.Relaying() {
		t.Fatal("not relaying")
	}
	p.s.Sweep(p.now.Add(2 * time.Second))
	if got := words(p.c.Packets(t)); !strings.Contains(got, "idle timeout") {
		t.Errorf("idle: %s", got)
	}
	srvPackets := words(p.h.Server.Packets(t))
	if !strings.Contains(srvPackets, "disconnect") {
		t.Errorf("the server was not told: %s", srvPackets)
	}

	cfg = config(users(t, srv.URL()))
	cfg.MaxSessionBuffer = 1000
	p = newPeer(t, cfg)
	p.login(xpratest.Hello("foo"), "bar")
	p.c.Pending = 5000 // the client reads nothing
	p.h.Server.FeedPacket(t, p.w, frame.Packet{"draw", 1, 0, 0, 10, 10, "rgb24", make([]byte, 3000), 1, 30, frame.NewDict()})
	p.s.ServerTraffic(p.now)
	p.s.Sweep(p.now)
	if got := words(p.c.Packets(t)); !strings.Contains(got, "connection too slow") {
		t.Errorf("over the session buffer: %s", got)
	}
}
