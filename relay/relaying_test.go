package relay_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/xpraproxy/xpraproxy/frame"
	"github.com/xpraproxy/xpraproxy/internal/xpratest"
	"github.com/xpraproxy/xpraproxy/relay"
)

// What the pipes see or rewrite while relaying, pools, the proxy's own
// pings, and the ways the reactor ends a session.

// relaying logs p in as foo/bar (a target must be configured) and fails
// the test unless it relays.
func relaying(t *testing.T, cfg *relay.Config) *peer {
	t.Helper()
	p := newPeer(t, cfg)
	p.login(with(xpratest.Hello("foo"), "ping-echo-sourceid", true), "bar")
	if !p.s.Relaying() {
		t.Fatalf("not relaying: %s", words(p.seen))
	}
	p.h.Server.Packets(t) // what the login sent
	return p
}

// fromServer feeds a packet from the backend and returns what the client
// was sent.
func (p *peer) fromServer(pkt frame.Packet) []frame.Packet {
	p.t.Helper()
	p.h.Server.FeedPacket(p.t, p.w, pkt)
	p.s.ServerTraffic(p.now)
	return p.c.Packets(p.t)
}

func TestRelayedControlPackets(t *testing.T) {
	srv, err := xpratest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := config(users(t, srv.URL()))

	p := relaying(t, cfg)
	// A server's info-response gets the proxy's part.
	got := words(p.fromServer(frame.Packet{"info-response", frame.NewDict("server", frame.NewDict("type", "xpra"))}))
	if !strings.Contains(got, "info-response") || !strings.Contains(got, "proxy") || !strings.Contains(got, "xpra") {
		t.Errorf("info-response: %s", got)
	}
	// A second hello from the server is filtered again; a client's is dropped.
	if got := words(p.fromServer(frame.Packet{"hello", frame.NewDict("version", "3.1.3", "aliases", frame.NewDict("x", 1))})); strings.Contains(got, "aliases") || !strings.Contains(got, "xpraproxy") {
		t.Errorf("server hello while relaying: %s", got)
	}
	p.send(frame.Packet{"hello", xpratest.Hello("foo")})
	if got := words(p.h.Server.Packets(t)); strings.Contains(got, "hello") {
		t.Errorf("a client hello reached the server while relaying: %s", got)
	}
	// A challenge while relaying cannot be answered: the session ends.
	if got := words(p.fromServer(frame.Packet{"challenge", []byte("salt"), "", "hmac+sha256", "hmac+sha256"})); !strings.Contains(got, "the server sent a challenge while relaying") {
		t.Errorf("challenge while relaying: %s", got)
	}

	// The server's disconnect reaches the client as it is.
	p = relaying(t, cfg)
	if got := words(p.fromServer(frame.Packet{"disconnect", "server shutdown", "bye"})); got != "disconnect server shutdown bye" {
		t.Errorf("server disconnect: %s", got)
	}
	// The client's disconnect reaches the server, and the session closes.
	p = relaying(t, cfg)
	p.send(frame.Packet{"disconnect", "client request"})
	if got := words(p.h.Server.Packets(t)); !strings.Contains(got, "disconnect client request") {
		t.Errorf("client disconnect: %s", got)
	}
	p.s.Sweep(p.now.Add(time.Minute))
	if !p.s.Closed() {
		t.Error("not closed after the client's disconnect")
	}
	// Bad frames from the server end the session with a reason.
	p = relaying(t, cfg)
	p.h.Server.Feed([]byte("PPPPPPPPPPPPPPPP"))
	p.s.ServerTraffic(p.now)
	if got := words(p.c.Packets(t)); !strings.Contains(got, "disconnect") {
		t.Errorf("garbage from the server: %s", got)
	}
}

// The reactor's ways to end a session each tell the client why.
func TestSessionEndings(t *testing.T) {
	srv, err := xpratest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := config(users(t, srv.URL()))
	for name, end := range map[string]func(s *relay.Session){
		"stop":   func(s *relay.Session) { s.Stop("proxy instance stopped by request") },
		"shed":   func(s *relay.Session) { s.Shed() },
		"reject": func(s *relay.Session) { s.Reject("server error", "going away") },
	} {
		t.Run(name, func(t *testing.T) {
			p := relaying(t, cfg)
			end(p.s)
			if got := words(p.c.Packets(t)); !strings.HasPrefix(got, "disconnect") {
				t.Errorf("%s: %s", name, got)
			}
			if !p.s.Urgent() {
				t.Error("a closing session is not urgent")
			}
			p.s.Sweep(p.now.Add(time.Minute))
			if !p.s.Closed() || p.s.Buffered() != 0 {
				t.Error("not closed")
			}
		})
	}
	p := relaying(t, cfg)
	p.s.OnClientClosed(io.EOF)
	if got := words(p.h.Server.Packets(t)); !strings.Contains(got, "disconnect") {
		t.Errorf("the server was not told the client left: %s", got)
	}
	q := newPeer(t, cfg)
	q.s.Forget()
	if !q.s.Closed() {
		t.Error("Forget")
	}
}

// A pool of two servers: least-sessions spreads two clients, a dead
// member is skipped, a session's end releases its member.
func TestSessionPool(t *testing.T) {
	a, _ := xpratest.StartServer()
	b, _ := xpratest.StartServer()
	defer a.Close()
	defer b.Close()
	pool, err := relay.ParsePool("farm:least-sessions:" + a.URL() + "," + b.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg := config(users(t, "pool:farm"))
	cfg.Pools = relay.Pools{"farm": pool}
	p1, p2 := relaying(t, cfg), relaying(t, cfg)
	if p1.s.Info() == nil || p2.s.Info() == nil {
		t.Fatal("no info")
	}
	for target, st := range pool.Status() {
		if st[1] != 1 {
			t.Errorf("least-sessions: %s has %d sessions, want 1 each", target, st[1])
		}
	}
	p1.s.Stop("done")
	pool.Release(p1.s.ID)
	b.Close()
	p3 := newPeer(t, cfg)
	p3.login(xpratest.Hello("foo"), "bar")
	if !p3.s.Relaying() {
		t.Errorf("the live member was not used: %s", words(p3.seen))
	}
	if _, err := relay.ParsePool("farm:fastest:" + a.URL()); err == nil {
		t.Error("an unknown policy was accepted")
	}
}

// The proxy pings both peers itself; the echoes stay with it.
func TestProxyPings(t *testing.T) {
	srv, err := xpratest.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := config(users(t, srv.URL()))
	cfg.PingInterval = time.Second
	p := relaying(t, cfg)
	p.s.Sweep(p.now.Add(2 * time.Second))
	toClient := p.c.Packets(t)
	toServer := p.h.Server.Packets(t)
	if len(toClient) != 1 || toClient[0].Type() != "ping" || len(toServer) != 1 || toServer[0].Type() != "ping" {
		t.Fatalf("pings: client %s, server %s", words(toClient), words(toServer))
	}
	// The client's echo carries the proxy's uuid: it is not relayed.
	echo := frame.Packet{"ping_echo", toClient[0][1], 0, 0, 0, 0, toClient[0][3]}
	p.send(echo)
	if got := words(p.h.Server.Packets(t)); strings.Contains(got, "ping_echo") {
		t.Errorf("the proxy's echo reached the server: %s", got)
	}
	if got := words(p.fromServer(frame.Packet{"ping_echo", toServer[0][1], 0, 0, 0, 0, toServer[0][3]})); strings.Contains(got, "ping_echo") {
		t.Errorf("the proxy's echo reached the client: %s", got)
	}
	if got := words([]frame.Packet{{p.s.Info()}}); !strings.Contains(got, "own-echoes") {
		t.Errorf("echoes not counted: %s", got)
	}
}
